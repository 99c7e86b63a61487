//! `cargo xtask ablation | metrics | attention` (owned by the evaluation crate's work).

use anyhow::{bail, Result};
use clap::Args;

#[derive(Args)]
pub struct AblationArgs {}
#[derive(Args)]
pub struct MetricsArgs {}
#[derive(Args)]
pub struct AttentionArgs {}

pub fn ablation(_a: AblationArgs) -> Result<()> {
    bail!("the ablation runner is not implemented yet")
}
pub fn metrics(_a: MetricsArgs) -> Result<()> {
    bail!("not implemented yet")
}
pub fn attention(_a: AttentionArgs) -> Result<()> {
    bail!("not implemented yet")
}
