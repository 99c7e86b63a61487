//! The same benchmark as `cargo xtask bench train`, buildable with this crate alone:
//! `cargo run --release -p mer-model --example bench_train -- train --threads 1`.

#[path = "../../../xtask/src/bench.rs"]
mod bench;

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: bench::BenchCmd,
}

fn main() -> anyhow::Result<()> {
    bench::run(Cli::parse().cmd)
}
