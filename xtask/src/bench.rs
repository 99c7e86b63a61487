//! `cargo xtask bench ...` (owned by the training-speed work).

use anyhow::{bail, Result};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Training samples per second of one step (batch 64, 3x112x112, Adam).
    Train {
        /// Worker threads.
        #[arg(long)]
        threads: Option<usize>,
        /// Batch size.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Model variant.
        #[arg(long, default_value = "ta")]
        variant: String,
    },
}

pub fn run(_c: BenchCmd) -> Result<()> {
    bail!("not implemented yet")
}
