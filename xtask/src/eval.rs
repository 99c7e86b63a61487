//! `cargo xtask ablation | report | metrics | attention`: glue over the evaluation crate.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;
use mer_eval::attention::{analyse_attention, format_table5};
use mer_eval::config::default_experiments_file;
use mer_eval::metrics::{evaluate_folds, read_predictions};
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use mer_eval::{
    report_run, run_ablation, AblationOptions, DataSource, Parallelism, Progress, ProgressEvent,
    Provenance, ReportOutcome, Shard,
};

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
    #[arg(long, conflicts_with = "budget")]
    pub epochs: Option<usize>,
    /// Size the epochs so that the whole run fits SECS seconds, from the training speed
    /// measured at the start (the default schedule has fixed epochs, so that its numbers do
    /// not depend on the machine's speed). Recorded in run.json and the manifest.
    #[arg(long, value_name = "SECS")]
    pub budget: Option<f64>,
    /// The folder of run folders.
    #[arg(long, default_value_os_t = project_root().join("results"))]
    pub results: PathBuf,
    /// The benchmark: `offtanet` (CASME, CAS(ME)^2, CASME II; the default) or `megc2019`
    /// (SMIC-HS, CASME II and SAMM with MEGC's rules; without --data on the synthetic
    /// database `<synth-dir>-megc`, which adds SMIC and SAMM).
    #[arg(long, default_value = "offtanet")]
    pub benchmark: mer_data::megc::Benchmark,
    /// How SMIC's apex (not annotated) is chosen: `middle` (the middle frame, the default)
    /// or `spotted` (the frame of largest mean optical strain from the onset; see
    /// `mer_data::spot`).
    #[arg(long, default_value = "middle", value_parser = ["middle", "spotted"])]
    pub smic_apex: String,
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
    /// Train every cell with seeds S..S+N-1, S the experiments file's seed (0 in
    /// paper.toml). Seed 0 keeps the random streams of a run without seeds.
    #[arg(long, value_name = "N", conflicts_with = "seed_list")]
    pub seeds: Option<usize>,
    /// Train every cell with each of these seeds (comma-separated).
    #[arg(long, value_name = "S,S,..", num_args = 1.., value_delimiter = ',')]
    pub seed_list: Vec<u64>,
    /// Run only shard I of N of the cells (1-based; a fixed assignment balancing their
    /// cost). Without it, the shard comes from SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT
    /// (minus SLURM_ARRAY_TASK_MIN) or Kubernetes' JOB_COMPLETION_INDEX/JOB_COMPLETIONS when
    /// set. A shard does not write the report: `cargo xtask report --run NAME` merges them.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Submit the run to Slurm instead of training here: prepares the run folder (data,
    /// features, settings), writes an array job over the shards and a report job that runs
    /// after it (`--dependency=afterok`) into `<run>/slurm/`, submits both with sbatch and
    /// prints their ids.
    #[arg(long)]
    pub slurm: bool,
    /// Slurm partition (default: the cluster's default).
    #[arg(long, requires = "slurm")]
    pub partition: Option<String>,
    /// Slurm time limit of each array task (e.g. `02:00:00`).
    #[arg(long, requires = "slurm")]
    pub time: Option<String>,
    /// CPUs per array task (the threads each task trains with).
    #[arg(long, requires = "slurm", default_value_t = 1)]
    pub cpus_per_task: usize,
    /// At most this many array tasks at once (`--array=...%K`).
    #[arg(long, requires = "slurm")]
    pub max_parallel: Option<usize>,
    /// Array tasks (shards) of a Slurm run (default: one per cell, at most 1000).
    #[arg(long, requires = "slurm")]
    pub shards: Option<usize>,
    /// Write the sbatch scripts and print the commands, without submitting.
    #[arg(long, requires = "slurm")]
    pub dry_run: bool,
    /// No progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// Stop after this many cells have been trained (simulates an interrupted run; for tests).
    #[arg(long, hide = true)]
    pub stop_after_cells: Option<usize>,
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
pub struct ReportArgs {
    /// The run (folder name under `results/`; default: the run worked on last).
    #[arg(long)]
    pub run: Option<String>,
    /// The folder of run folders.
    #[arg(long, default_value_os_t = project_root().join("results"))]
    pub results: PathBuf,
}

#[derive(Args)]
pub struct AttentionArgs {
    /// The run (folder name under `results/`; default: the most recent run).
    #[arg(long)]
    pub run: Option<String>,
    /// The seed whose models to analyse (default: the run's first).
    #[arg(long)]
    pub seed: Option<u64>,
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

fn provenance() -> Provenance {
    Provenance {
        commit: commit(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
    }
}

/// The run's options from the command line.
fn options(a: &AblationArgs) -> Result<AblationOptions> {
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
        let tag = match a.benchmark {
            mer_data::megc::Benchmark::OffTanet => tag,
            mer_data::megc::Benchmark::Megc2019 => format!("{tag}-megc2019"),
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
    let seeds = match (a.seeds, a.seed_list.is_empty()) {
        (Some(0), _) => bail!("--seeds 0: expected at least one seed"),
        (Some(n), _) => {
            let base = mer_eval::config::ExperimentsFile::load(&a.config)?.seed;
            (0..n as u64).map(|i| base + i).collect()
        }
        (None, false) => a.seed_list.clone(),
        (None, true) => Vec::new(),
    };
    let shard = match &a.shard {
        Some(s) => Some(s.parse::<Shard>()?),
        None if a.slurm => None,
        None => Shard::from_env(|k| std::env::var(k).ok())?,
    };
    Ok(AblationOptions {
        experiments_file: a.config.clone(),
        schedule,
        epochs: a.epochs,
        budget_secs: a.budget,
        seeds,
        shard,
        data,
        cache_dir: a.cache.clone(),
        results_dir: a.results.clone(),
        run_name,
        only: a.only.clone(),
        benchmark: a.benchmark,
        smic_apex: a.smic_apex.parse().map_err(anyhow::Error::msg)?,
        parallelism: a.parallel,
        threads,
        stop_after_cells: a.stop_after_cells,
        progress: if a.no_progress {
            Progress::log()
        } else {
            bars()
        },
        provenance: provenance(),
    })
}

/// Progress bars for the runner's events: one for the cells, one per worker for epochs.
fn bars() -> Progress {
    struct Bars {
        multi: MultiProgress,
        total: Option<ProgressBar>,
        workers: Vec<ProgressBar>,
    }
    let state = Mutex::new(Bars {
        multi: MultiProgress::new(),
        total: None,
        workers: Vec::new(),
    });
    Progress::new(move |e| {
        let mut b = state.lock().unwrap();
        match e {
            ProgressEvent::Planned {
                cells,
                epochs,
                workers,
            } => {
                let total = b.multi.add(ProgressBar::new(*cells as u64));
                total.set_style(
                    ProgressStyle::with_template(
                        "cells  [{bar:30}] {pos}/{len} ({elapsed}, eta {eta}) {msg}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                b.total = Some(total);
                b.workers = (0..*workers)
                    .map(|_| {
                        let w = b.multi.add(ProgressBar::new(*epochs as u64));
                        w.set_style(
                            ProgressStyle::with_template(
                                "  {msg:34} [{bar:20}] epoch {pos}/{len} (eta {eta})",
                            )
                            .expect("valid template")
                            .progress_chars("=> "),
                        );
                        w
                    })
                    .collect();
            }
            ProgressEvent::CellStarted {
                worker,
                cell,
                subject,
            } => {
                if let Some(w) = b.workers.get(*worker) {
                    w.reset();
                    w.set_message(format!("{} s{} {subject}", cell.experiment, cell.seed));
                }
            }
            ProgressEvent::Epoch { worker, epoch } => {
                if let Some(w) = b.workers.get(*worker) {
                    w.set_position(*epoch as u64);
                }
            }
            ProgressEvent::CellFinished { line, .. } => {
                let _ = b.multi.println(line);
                if let Some(t) = &b.total {
                    t.inc(1);
                }
            }
            ProgressEvent::TrainingDone => {
                for w in b.workers.drain(..) {
                    w.finish_and_clear();
                }
                if let Some(t) = b.total.take() {
                    t.finish_and_clear();
                }
            }
        }
    })
}

fn print_summaries(r: &ReportOutcome) {
    println!(
        "{:<10} {:>6} {:>8} {:>8} {:>17} {:>10} {:>10} {:>7}",
        "experiment", "seeds", "UAR", "UF1", "UAR 95% CI", "dUAR(ta)", "paper UAR", "params"
    );
    for s in &r.summaries {
        match &s.aggregate {
            Some(a) => println!(
                "{:<10} {:>6} {:>8.4} {:>8.4} {:>17} {:>10} {:>10.4} {:>7}",
                s.spec.name,
                a.seeds.len(),
                a.uar.mean,
                a.uf1.mean,
                format!(
                    "[{:.3}, {:.3}]",
                    a.interval.uar_ci.low, a.interval.uar_ci.high
                ),
                a.vs_reference
                    .as_ref()
                    .map_or(String::new(), |d| format!("{:+.4}", d.uar)),
                a.paper_uar.mean,
                s.params
            ),
            None => println!(
                "{:<10} incomplete ({}/{} cells)",
                s.spec.name, s.cells_done, s.cells_total
            ),
        }
    }
    println!("(UAR/UF1: honest protocol, pooled at the last epoch, mean over seeds; CI: bootstrap over subjects; paper: best epoch chosen on the test folds)");
    if !r.missing.is_empty() {
        println!(
            "{} of {} cells missing (listed in the report)",
            r.missing.len(),
            r.cells_total
        );
    }
    println!("report: {}", r.report.display());
}

pub fn ablation(a: AblationArgs) -> Result<()> {
    let opts = options(&a)?;
    if a.slurm {
        return crate::slurm::submit(&a, &opts);
    }
    let out = run_ablation(&opts)?;
    match &out.report {
        Some(r) => {
            println!(
                "\nrun {} ({} cells trained, {} reused) in {:.0} s",
                out.run_dir.display(),
                out.trained_cells,
                out.reused_cells,
                out.wall_secs
            );
            print_summaries(r);
        }
        None => println!(
            "\nrun {}: shard done ({} of its {} cells trained, {} reused) in {:.0} s; when every shard is done: cargo xtask report --run {}",
            out.run_dir.display(),
            out.trained_cells,
            out.shard_cells,
            out.reused_cells,
            out.wall_secs,
            out.settings.run
        ),
    }
    Ok(())
}

pub fn report(a: ReportArgs) -> Result<()> {
    let run = match &a.run {
        Some(r) => r.clone(),
        None => latest_run(&a.results)?,
    };
    let dir = a.results.join(&run);
    let r = report_run(&dir, &provenance()).with_context(|| format!("run {}", dir.display()))?;
    println!(
        "run {}: {} of {} cells finished",
        dir.display(),
        r.cells_done,
        r.cells_total
    );
    print_summaries(&r);
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

/// The run folder worked on last: the newest invocation record (or `run.json`).
fn latest_run(results: &Path) -> Result<String> {
    let newest = |dir: &Path| -> Option<std::time::SystemTime> {
        let inv = std::fs::read_dir(dir.join("invocations"))
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.metadata().ok()?.modified().ok())
            .max();
        inv.or_else(|| {
            std::fs::metadata(dir.join("run.json"))
                .ok()?
                .modified()
                .ok()
        })
    };
    let mut best: Option<(std::time::SystemTime, String)> = None;
    for e in std::fs::read_dir(results).with_context(|| {
        format!(
            "{}: no results folder; run `cargo xtask ablation` first",
            results.display()
        )
    })? {
        let e = e?;
        if !e.path().join("run.json").is_file() {
            continue;
        }
        if let Some(m) = newest(&e.path()) {
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
    let r = analyse_attention(&dir, &a.experiment, a.seed, a.sample.as_deref())
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

#[derive(Args)]
pub struct TrainArgs {
    /// The experiment (a name of the experiments file: `ta`, a baseline, ...).
    #[arg(long, default_value = "ta")]
    pub experiment: String,
    /// Write the weights here (safetensors; a `.json` record of what they were trained on
    /// is written beside them).
    #[arg(long)]
    pub out: PathBuf,
    /// Real databases under this folder instead of the embedded synthetic database.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The paper's schedule instead of the default `quick` one.
    #[arg(long)]
    pub full: bool,
    /// Train exactly this many epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// The seed (default: the experiments file's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// The experiments file.
    #[arg(long, default_value_os_t = default_experiments_file(&project_root()))]
    pub config: PathBuf,
    /// The benchmark whose databases to train on.
    #[arg(long, default_value = "offtanet")]
    pub benchmark: mer_data::megc::Benchmark,
    /// The feature cache.
    #[arg(long, default_value_os_t = project_root().join("data").join("features"))]
    pub cache: PathBuf,
    /// Where the synthetic database is (generated there if absent).
    #[arg(long, default_value_os_t = project_root().join("data").join("synthetic"))]
    pub synth_dir: PathBuf,
    /// Cores to use (default: all).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// `cargo xtask train`: one model of an experiment on every subject (for deployment).
pub fn train(a: TrainArgs) -> Result<()> {
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
    let data = match &a.data {
        Some(d) => {
            if !d.is_dir() {
                bail!("--data {}: not a folder", d.display());
            }
            DataSource::Root(d.canonicalize().with_context(|| d.display().to_string())?)
        }
        None => DataSource::Synthetic(a.synth_dir.clone()),
    };
    // The data, features and settings as the runner prepares them, in a scratch run folder.
    let scratch = std::env::temp_dir().join(format!("xtask-train-{}", std::process::id()));
    let opts = AblationOptions {
        experiments_file: a.config.clone(),
        schedule: if a.full { "paper" } else { "quick" }.into(),
        epochs: a.epochs,
        budget_secs: None,
        seeds: a.seed.into_iter().collect(),
        shard: None,
        data,
        cache_dir: a.cache.clone(),
        results_dir: scratch.clone(),
        run_name: "deploy".into(),
        only: vec![a.experiment.clone()],
        benchmark: a.benchmark,
        smic_apex: Default::default(),
        parallelism: Parallelism::Serial,
        threads,
        stop_after_cells: None,
        progress: Progress::log(),
        provenance: provenance(),
    };
    let prepared = mer_eval::runner::prepare(&opts);
    let result = prepared.and_then(|p| {
        let seed = p.seeds[0];
        let epochs = p
            .experiments
            .first()
            .map_or(0, |e| e.schedule(&p.settings.schedule).epochs);
        let bar = if a.no_progress {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(epochs as u64).with_style(
                ProgressStyle::with_template("{msg} [{bar:30}] epoch {pos}/{len} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            )
        };
        bar.set_message(format!("{} on {} samples", a.experiment, p.samples.len()));
        let on_epoch = |_e: usize| bar.inc(1);
        let r = mer_eval::runner::train_deployable(
            &p,
            &a.experiment,
            seed,
            &opts.provenance,
            &on_epoch,
        );
        bar.finish_and_clear();
        r
    });
    let _ = std::fs::remove_dir_all(&scratch);
    let (net, record) = result?;
    mer_common::fs::write_atomic_with(&a.out, |tmp: &Path| -> anyhow::Result<()> {
        Ok(net.save_safetensors(tmp)?)
    })
    .with_context(|| format!("writing {}", a.out.display()))?;
    let json = a.out.with_extension("json");
    mer_common::fs::write_atomic(&json, serde_json::to_string_pretty(&record)?.as_bytes())
        .with_context(|| format!("writing {}", json.display()))?;
    println!(
        "{}: {} epochs on all {} samples in {:.1} s (last epoch's loss {:.4}); weights {}, record {}",
        a.experiment,
        record.schedule.epochs,
        record.samples,
        record.seconds,
        record.train_loss.last().copied().unwrap_or(f32::NAN),
        a.out.display(),
        json.display()
    );
    Ok(())
}
