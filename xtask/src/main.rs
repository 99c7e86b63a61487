//! `cargo xtask`: the project's command line. Glue only: all logic lives in the
//! library crates. One module per command; the flags of each command are
//! declared (with doc comments) in its module.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench;
mod data;
mod eval;
mod flow;
mod model;
mod slurm;
mod util;

/// Off-TANet micro-expression recognition toolkit.
#[derive(Parser)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// TV-L1 optical flow (and optical strain) of one pair or a list of pairs.
    Flow(flow::FlowArgs),
    /// Model inspection: `model summary [--model off-tanet|ststnet|...] [--variant ta]`.
    #[command(subcommand)]
    Model(model::ModelCmd),
    /// Class probabilities (and logits) of feature tensors with given weights.
    Predict(model::PredictArgs),
    /// Index the databases under a folder into a 3-class sample list.
    Index(data::IndexArgs),
    /// Write the synthetic micro-expression database in the native layouts.
    Synth(data::SynthArgs),
    /// Compute the onset->apex flow features of a sample list into a cache.
    Features(data::FeaturesArgs),
    /// The paper's experiments (Tables 3-4, Fig. 4) with LOSO training: the main job.
    Ablation(Box<eval::AblationArgs>),
    /// The report of a run folder from its finished cells (after shards or Slurm jobs).
    Report(eval::ReportArgs),
    /// One model of an experiment trained on every subject (for deployment; the LOSO
    /// folds of `ablation` exist to measure).
    Train(Box<eval::TrainArgs>),
    /// UAR / UF1 of a predictions CSV (`fold,truth,pred`).
    Metrics(eval::MetricsArgs),
    /// Attention maps (Fig. 5) and their sparseness (Table 5) of a finished run.
    Attention(eval::AttentionArgs),
    /// Benchmarks: `bench train` (training samples/s, ours vs PyTorch where installed).
    #[command(subcommand)]
    Bench(bench::BenchCmd),
}

fn main() -> std::process::ExitCode {
    util::init_tracing();
    let cli = Cli::parse();
    let res: Result<std::process::ExitCode> = match cli.cmd {
        Cmd::Flow(a) => flow::run(a),
        Cmd::Model(c) => model::run(c).map(|()| std::process::ExitCode::SUCCESS),
        Cmd::Predict(a) => model::predict(a).map(|()| std::process::ExitCode::SUCCESS),
        Cmd::Index(a) => data::index(a).map(|()| std::process::ExitCode::SUCCESS),
        Cmd::Synth(a) => data::synth(a).map(|()| std::process::ExitCode::SUCCESS),
        Cmd::Features(a) => data::features(a).map(|()| std::process::ExitCode::SUCCESS),
        Cmd::Ablation(a) => eval::ablation(*a).map(|()| std::process::ExitCode::SUCCESS),
        Cmd::Report(a) => eval::report(a).map(|()| std::process::ExitCode::SUCCESS),
        Cmd::Train(a) => eval::train(*a).map(|()| std::process::ExitCode::SUCCESS),
        Cmd::Metrics(a) => eval::metrics(a).map(|()| std::process::ExitCode::SUCCESS),
        Cmd::Attention(a) => eval::attention(a).map(|()| std::process::ExitCode::SUCCESS),
        Cmd::Bench(c) => bench::run(c).map(|()| std::process::ExitCode::SUCCESS),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
