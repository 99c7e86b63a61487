//! `cargo xtask bench ...`: argument parsing, the thread pool and printing around
//! [`mer_eval::bench`], which holds the benchmark and its PyTorch peer.

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use mer_eval::bench::{bench_train, BenchMode, TrainBenchOptions};
use mer_model::{ModelConfig, ModelSpec, Variant};

/// How the threads are used in `bench train`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// One trainer whose steps use all `--threads` threads.
    Step,
    /// `--threads` independent trainers (one per thread, as one fold per core would be);
    /// the reported rate is their sum.
    Folds,
}

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Training samples per second of one step (batch 64, the model's input, Adam; SGD for
    /// Micro-Attention), ours against PyTorch's same model in the same run.
    Train {
        /// Worker threads (default: RAYON_NUM_THREADS, else all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Batch size.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Off-TANet's variant (with `--model off-tanet`).
        #[arg(long, default_value = "ta")]
        variant: String,
        /// The model: `off-tanet` (default) or a Table 2 baseline (`off-apexnet`, `ststnet`,
        /// `dual-inception`, `macnn`, `micro-attention`).
        #[arg(long, default_value = "off-tanet")]
        model: String,
        /// Timed training steps per round (after two warm-up steps).
        #[arg(long, default_value_t = 4)]
        steps: usize,
        /// Rounds; ours and PyTorch alternate round by round.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Parallelism inside a step (`step`) or one trainer per thread (`folds`).
        #[arg(long, value_enum, default_value_t = Mode::Step)]
        mode: Mode,
        /// Skip PyTorch even where it is installed.
        #[arg(long)]
        no_pytorch: bool,
        /// The Python interpreter for the PyTorch peer (`$MER_BENCH_PYTHON`, else python3).
        #[arg(long)]
        python: Option<String>,
        /// Also time inference (evaluation mode, same batch).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        inference: bool,
    },
}

pub fn run(c: BenchCmd) -> Result<()> {
    let BenchCmd::Train {
        threads,
        batch,
        variant,
        model,
        steps,
        rounds,
        mode,
        no_pytorch,
        python,
        inference,
    } = c;
    let variant: Variant = variant.parse()?;
    let model = match model.parse::<ModelSpec>()? {
        ModelSpec::OffTaNet(_) => ModelSpec::OffTaNet(ModelConfig::new(variant)),
        b => {
            anyhow::ensure!(
                variant == Variant::Ta,
                "--variant is for --model off-tanet only"
            );
            b
        }
    };
    let threads = match threads {
        Some(n) => n,
        None => std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    };
    anyhow::ensure!(threads >= 1, "--threads must be at least 1");
    // candle and gemm size their pools from RAYON_NUM_THREADS: set it before the first op.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .context("building the thread pool")?;
    let python = python
        .or_else(|| std::env::var("MER_BENCH_PYTHON").ok())
        .unwrap_or_else(|| "python3".into());
    let o = TrainBenchOptions {
        model,
        batch,
        threads,
        steps,
        rounds,
        mode: match mode {
            Mode::Step => BenchMode::Step,
            Mode::Folds => BenchMode::Folds,
        },
        python: (!no_pytorch).then_some(python),
        inference,
    };
    println!(
        "bench train: model {model}, batch {batch}, {threads} thread(s), mode {mode:?}, {rounds} rounds of {steps} steps"
    );
    let r = bench_train(&o, &mut |line| println!("{line}"))?;
    if let Some(i) = r.ours_infer {
        println!("inference ours: {i:.1} samples/s");
    }
    if let Some(i) = r.torch_infer {
        println!("inference pytorch: {i:.1} samples/s");
    }
    if matches!(o.model, ModelSpec::OffTaNet(_)) {
        // Off-TANet's paper schedule: 49 folds x 201 epochs x 294 samples (each fold trains
        // on the others' samples). The baselines' schedules differ (experiments/paper.toml).
        let sample_steps = 201.0 * (49.0 * 294.0 - 294.0);
        println!(
            "paper protocol (49 folds x 201 epochs, one configuration) at this rate: {:.1} h",
            sample_steps / r.ours_train / 3600.0
        );
    }
    match r.torch_train {
        Some(py) => {
            println!("pytorch: {py:.1} samples/s");
            println!("ratio: ours/pytorch = {:.2}", r.ours_train / py);
        }
        None if !no_pytorch => println!("pytorch: {}, not compared", r.peer),
        None => {}
    }
    println!("ours: {:.1} samples/s", r.ours_train);
    Ok(())
}
