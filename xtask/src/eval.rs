//! `cargo xtask ablation | metrics | attention`: glue over the evaluation crate.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;
use mer_eval::attention::{analyse_attention, format_table5};
use mer_eval::config::default_experiments_file;
use mer_eval::metrics::{evaluate_folds, read_predictions};
use mer_eval::{run_ablation, AblationOptions, DataSource, Parallelism, Provenance};

use crate::util::project_root;

#[derive(Args)]
pub struct AblationArgs {
    /// Real databases under this folder (indexed as `cargo xtask index` does) instead of the
    /// embedded synthetic database.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The paper's schedule (201 epochs, batch 64) instead of the default `quick` one
    /// (8 epochs, batch 8).
    #[arg(long)]
    pub full: bool,
    /// Only these experiments (names from the experiments file; comma-separated or repeated).
    #[arg(long, num_args = 1.., value_delimiter = ',')]
    pub only: Vec<String>,
    /// The run's name: its folder is `results/NAME` (default: `<data>-<schedule>`). A rerun
    /// with the same name resumes it.
    #[arg(long)]
    pub run: Option<String>,
    /// The experiments file.
    #[arg(long, default_value_os_t = default_experiments_file(&project_root()))]
    pub config: PathBuf,
    /// A schedule of the experiments file by name (default: `quick`, or `paper` with --full).
    #[arg(long)]
    pub schedule: Option<String>,
    /// Train exactly this many epochs (instead of the schedule's or the sized number).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Size the epochs so that the whole run fits SECS seconds, from the training speed
    /// measured at the start (the default schedule has fixed epochs, so that its numbers do
    /// not depend on the machine's speed). Recorded in run.json and the manifest.
    #[arg(long, value_name = "SECS")]
    pub budget: Option<f64>,
    /// The folder of run folders.
    #[arg(long, default_value_os_t = project_root().join("results"))]
    pub results: PathBuf,
    /// The feature cache.
    #[arg(long, default_value_os_t = project_root().join("data").join("features"))]
    pub cache: PathBuf,
    /// Where the synthetic database is (generated there if absent).
    #[arg(long, default_value_os_t = project_root().join("data").join("synthetic"))]
    pub synth_dir: PathBuf,
    /// Cores to use (default: all).
    #[arg(long)]
    pub threads: Option<usize>,
    /// How folds share the cores: `auto` (measure, take the faster), `folds` (one fold per
    /// core) or `serial` (one fold on all cores).
    #[arg(long, default_value = "auto", value_parser = parse_parallelism)]
    pub parallel: Parallelism,
    /// No progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// Stop after this many folds have been trained (simulates an interrupted run; for tests).
    #[arg(long, hide = true)]
    pub stop_after_folds: Option<usize>,
}

fn parse_parallelism(s: &str) -> std::result::Result<Parallelism, String> {
    match s {
        "auto" => Ok(Parallelism::Auto),
        "folds" => Ok(Parallelism::Folds),
        "serial" => Ok(Parallelism::Serial),
        _ => Err(format!("`{s}`: expected auto, folds or serial")),
    }
}

#[derive(Args)]
pub struct MetricsArgs {
    /// Predictions CSV with header `fold,truth,pred` (class names).
    #[arg(long)]
    pub pred: PathBuf,
    /// Write the JSON here too (it always goes to standard output).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args)]
pub struct AttentionArgs {
    /// The run (folder name under `results/`; default: the most recent run).
    #[arg(long)]
    pub run: Option<String>,
    /// The sample of Fig. 5, `dataset/subject/sample` (default: the first positive test
    /// sample of fold 1).
    #[arg(long)]
    pub sample: Option<String>,
    /// The experiment whose models to analyse (it needs spatial and self-attention).
    #[arg(long, default_value = "ta")]
    pub experiment: String,
    /// The folder of run folders.
    #[arg(long, default_value_os_t = project_root().join("results"))]
    pub results: PathBuf,
}

/// The source commit, with `-dirty` when tracked files changed; `unknown` without git.
fn commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(project_root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(c) => match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(s) if !s.is_empty() => format!("{c}-dirty"),
            _ => c,
        },
        None => "unknown".into(),
    }
}

pub fn ablation(a: AblationArgs) -> Result<()> {
    let schedule = a
        .schedule
        .clone()
        .unwrap_or_else(|| if a.full { "paper" } else { "quick" }.to_string());
    let data = match &a.data {
        Some(d) => {
            if !d.is_dir() {
                bail!("--data {}: not a folder", d.display());
            }
            DataSource::Root(d.canonicalize().with_context(|| d.display().to_string())?)
        }
        None => DataSource::Synthetic(a.synth_dir.clone()),
    };
    let run_name = a.run.clone().unwrap_or_else(|| {
        let tag = match &a.data {
            Some(d) => mer_common::names::file_safe(
                &d.file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "data".into()),
            ),
            None => "synthetic".into(),
        };
        match (a.epochs, a.budget) {
            (Some(e), _) => format!("{tag}-{schedule}-e{e}"),
            (None, Some(b)) => format!("{tag}-{schedule}-b{b}"),
            (None, None) => format!("{tag}-{schedule}"),
        }
    });
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    anyhow::ensure!(threads >= 1, "--threads must be at least 1");
    if let Some(b) = a.budget {
        anyhow::ensure!(
            b > 0.0 && b.is_finite(),
            "--budget {b}: expected a positive number of seconds"
        );
    }
    let opts = AblationOptions {
        experiments_file: a.config.clone(),
        schedule,
        epochs: a.epochs,
        budget_secs: a.budget,
        data,
        cache_dir: a.cache.clone(),
        results_dir: a.results.clone(),
        run_name,
        only: a.only.clone(),
        parallelism: a.parallel,
        threads,
        stop_after_folds: a.stop_after_folds,
        progress: !a.no_progress,
        provenance: Provenance {
            commit: commit(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
        },
    };
    let out = run_ablation(&opts)?;
    println!(
        "\nrun {} ({} folds trained, {} reused) in {:.0} s",
        out.run_dir.display(),
        out.trained_folds,
        out.reused_folds,
        out.wall_secs
    );
    println!(
        "{:<10} {:>8} {:>8} {:>10} {:>10} {:>10} {:>10} {:>7}",
        "experiment", "UAR", "UF1", "fold UAR", "fold UF1", "paper UAR", "paper UF1", "params"
    );
    for s in &out.summaries {
        match &s.scores {
            Some(p) => println!(
                "{:<10} {:>8.4} {:>8.4} {:>10.4} {:>10.4} {:>10.4} {:>10.4} {:>7}",
                s.spec.name,
                p.honest_pooled.uar,
                p.honest_pooled.uf1,
                p.honest_fold_mean.uar,
                p.honest_fold_mean.uf1,
                p.paper.uar,
                p.paper.uf1,
                s.params
            ),
            None => println!(
                "{:<10} incomplete ({}/{} folds)",
                s.spec.name, s.folds_done, s.folds_total
            ),
        }
    }
    println!("(UAR/UF1: honest protocol, pooled at the last epoch; paper: best epoch chosen on the test folds)");
    println!("report: {}", out.report.display());
    Ok(())
}

pub fn metrics(a: MetricsArgs) -> Result<()> {
    let p = read_predictions(&a.pred)?;
    let report = evaluate_folds(&p.folds, p.classes.len());
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(out) = &a.out {
        mer_eval::io::write_atomic(out, format!("{json}\n").as_bytes())?;
    }
    println!("{json}");
    Ok(())
}

/// The most recently modified run folder (one with a `run.json`).
fn latest_run(results: &Path) -> Result<String> {
    let mut best: Option<(std::time::SystemTime, String)> = None;
    for e in std::fs::read_dir(results).with_context(|| {
        format!(
            "{}: no results folder; run `cargo xtask ablation` first",
            results.display()
        )
    })? {
        let e = e?;
        let state = e.path().join("run.json");
        if let Ok(m) = std::fs::metadata(&state).and_then(|m| m.modified()) {
            if best.as_ref().is_none_or(|(t, _)| m > *t) {
                best = Some((m, e.file_name().to_string_lossy().into_owned()));
            }
        }
    }
    best.map(|(_, n)| n)
        .with_context(|| format!("no run folder under {}", results.display()))
}

pub fn attention(a: AttentionArgs) -> Result<()> {
    let run = match &a.run {
        Some(r) => r.clone(),
        None => latest_run(&a.results)?,
    };
    let dir = a.results.join(&run);
    let r = analyse_attention(&dir, &a.experiment, a.sample.as_deref())
        .with_context(|| format!("run {}", dir.display()))?;
    println!("Table 5 (run {run}, experiment {}):\n", r.experiment);
    print!("{}", format_table5(&r));
    println!(
        "\nFig. 5: {} (sample {}, fold {})",
        r.figure.display(),
        r.sample,
        r.sample_fold
    );
    Ok(())
}
