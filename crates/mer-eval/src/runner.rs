//! The experiment runner behind `cargo xtask ablation`: data, features, schedule sizing,
//! LOSO training of every experiment (folds in parallel where that is faster), resumable
//! run folders, and the report.
//!
//! A run folder `results/<run>/` holds:
//! - `run.json`: what the run is (schedule as resolved, seed, data list hash, parallel mode,
//!   the speed measurements that sized the schedule); a rerun reuses it, so a resumed run
//!   trains with the same schedule;
//! - `samples.csv`: the sample list;
//! - `folds/<experiment>/fold-NN-<dataset>-<subject>.json` (+ `.safetensors`, the fold's
//!   final weights): one per finished fold, written atomically, weights first; a rerun
//!   skips the folds whose JSON exists with the same fingerprint, so a killed run loses at
//!   most the folds in progress;
//! - the report (see [`crate::report`]) and `manifest.json`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use mer_data::features::{ensure_features, FeatureCache, FeatureConfig, InputKind};
use mer_data::index::{index_root, IndexOptions};
use mer_data::list::format_list;
use mer_data::SampleMeta;
use mer_model::candle_core::{Device, Tensor};
use mer_model::ModelConfig;
use serde::{Deserialize, Serialize};

use crate::config::{ExperimentSpec, ExperimentsFile, Schedule, ScheduleSpec, TableSpec};
use crate::io::{fnv1a64_hex, read_json, write_atomic, write_atomic_with, write_json};
use crate::loso::{loso_folds, Fold};
use crate::report::{write_report, ExperimentSummary};
use crate::train::{measure_speed, train_fold, FoldJob, FoldRecord};
use crate::{Error, Result};

/// Where the samples come from.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    /// The embedded synthetic database at this folder (generated if absent).
    Synthetic(PathBuf),
    /// Real databases under this folder, indexed as the data crate does.
    Root(PathBuf),
}

impl DataSource {
    /// The folder.
    pub fn root(&self) -> &Path {
        match self {
            DataSource::Synthetic(p) | DataSource::Root(p) => p,
        }
    }
    /// Whether this is the synthetic database.
    pub fn is_synthetic(&self) -> bool {
        matches!(self, DataSource::Synthetic(_))
    }
}

/// How folds share the cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Parallelism {
    /// Measure both and take the faster (default).
    Auto,
    /// One fold per worker, each fold's tensor operations on one thread.
    Folds,
    /// One fold at a time on all cores.
    Serial,
}

/// Provenance recorded in the manifest (the library does not run git).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The source commit (`git describe`-like, with a dirty flag), if known.
    pub commit: String,
    /// The command line.
    pub command: String,
}

/// Options of [`run_ablation`].
#[derive(Debug, Clone)]
pub struct AblationOptions {
    /// The experiments file (`experiments/paper.toml`).
    pub experiments_file: PathBuf,
    /// The schedule's name in it (`quick`, `paper`).
    pub schedule: String,
    /// Fixed epochs instead of the file's (or the sized) number.
    pub epochs: Option<usize>,
    /// Size the epochs so that the whole run fits this many seconds, from the training
    /// speed measured at the start (instead of the schedule's fixed epochs). The result
    /// then depends on the machine's speed: recorded in `run.json` and the manifest.
    pub budget_secs: Option<f64>,
    /// The data.
    pub data: DataSource,
    /// The feature cache folder.
    pub cache_dir: PathBuf,
    /// The folder of run folders (`results/`).
    pub results_dir: PathBuf,
    /// The run's name: its folder is `results_dir/run_name`.
    pub run_name: String,
    /// Only these experiments (all when empty).
    pub only: Vec<String>,
    /// How folds share the cores.
    pub parallelism: Parallelism,
    /// Cores to use.
    pub threads: usize,
    /// Stop (with [`Error::Stopped`]) once this many folds have been trained in this
    /// invocation: simulates an interrupted run.
    pub stop_after_folds: Option<usize>,
    /// Draw progress bars.
    pub progress: bool,
    /// Recorded in the manifest.
    pub provenance: Provenance,
}

/// A training-speed measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeedRecord {
    /// The model (`ta/3ch`).
    pub model: String,
    /// Samples per second of one worker in the chosen mode.
    pub samples_per_sec: f64,
}

/// How the run was parallelised and, for a sized schedule, why it has its epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionPlan {
    /// `folds` (one fold per worker, one thread each) or `serial` (one fold on all threads).
    pub mode: String,
    /// Concurrent folds.
    pub workers: usize,
    /// Threads per fold.
    pub threads_per_fold: usize,
    /// Measured throughput of `ta` (samples/s, all workers) one fold per core, if measured.
    pub folds_throughput: Option<f64>,
    /// Measured throughput of `ta` (samples/s) of one fold on all cores, if measured.
    pub serial_throughput: Option<f64>,
    /// Per-model speeds used for sizing.
    pub speeds: Vec<SpeedRecord>,
    /// The budget (seconds) of a sized schedule.
    pub budget_secs: Option<f64>,
    /// Seconds left for training when the schedule was sized.
    pub training_budget_secs: Option<f64>,
    /// Predicted training time (seconds) of the chosen schedule.
    pub predicted_training_secs: Option<f64>,
}

/// `run.json`: what a run folder holds, fixed at its first start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Format version.
    pub version: u32,
    /// The run's name.
    pub run: String,
    /// The resolved schedule.
    pub schedule: Schedule,
    /// The seed.
    pub seed: u64,
    /// `synthetic` or `root`.
    pub data_kind: String,
    /// The data folder.
    pub data_root: PathBuf,
    /// The feature cache folder.
    pub cache_dir: PathBuf,
    /// Hash of the sample list.
    pub list_hash: String,
    /// Number of samples.
    pub samples: usize,
    /// Number of LOSO folds.
    pub folds: usize,
    /// The experiments file.
    pub experiments_file: PathBuf,
    /// The experiment definitions trained in this run (by name).
    pub experiments: BTreeMap<String, ExperimentSpec>,
    /// The report's tables.
    pub tables: Vec<TableSpec>,
    /// Parallelism and sizing.
    pub plan: ExecutionPlan,
    /// Creation time (seconds since the Unix epoch).
    pub created_unix: u64,
}

const RUN_STATE_VERSION: u32 = 1;

/// What [`run_ablation`] did.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The run folder.
    pub run_dir: PathBuf,
    /// `REPORT.md`.
    pub report: PathBuf,
    /// Per-experiment results (those with all folds finished and the others).
    pub summaries: Vec<ExperimentSummary>,
    /// The run's state.
    pub state: RunState,
    /// Folds trained by this invocation.
    pub trained_folds: usize,
    /// Folds reused from earlier invocations.
    pub reused_folds: usize,
    /// Wall time of this invocation (seconds).
    pub wall_secs: f64,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The sample ids `dataset/subject/sample`.
pub fn sample_ids(samples: &[SampleMeta]) -> Vec<String> {
    samples.iter().map(SampleMeta::id).collect()
}

/// Version of the training procedure's random streams, part of every fingerprint: bumped
/// when a change makes the same configuration train differently (2: seeded dropout; 3: the
/// weight-gradient sums in a fixed number of chunks, whatever the thread count).
const TRAINING_VERSION: u32 = 3;

/// The fingerprint of an experiment in a run: a fold file is reused only if it matches.
pub fn fingerprint(e: &ExperimentSpec, s: &Schedule, seed: u64, list_hash: &str) -> String {
    let text = format!(
        "training={TRAINING_VERSION};variant={};input={};schedule={};seed={seed};list={list_hash}",
        e.variant,
        e.input,
        serde_json::to_string(s).unwrap_or_default()
    );
    fnv1a64_hex(text.as_bytes())
}

/// The fold files of an experiment: `(json, weights)`.
pub fn fold_paths(run_dir: &Path, experiment: &str, fold: &Fold) -> (PathBuf, PathBuf) {
    let d = run_dir.join("folds").join(experiment);
    (
        d.join(format!("{}.json", fold.stem())),
        d.join(format!("{}.safetensors", fold.stem())),
    )
}

/// The finished fold records of an experiment (in fold order), ignoring files of another
/// fingerprint only if `strict` is false.
pub fn load_fold_records(
    run_dir: &Path,
    experiment: &str,
    folds: &[Fold],
    fingerprint: &str,
    strict: bool,
) -> Result<Vec<FoldRecord>> {
    let mut out = Vec::new();
    for f in folds {
        let (json, _) = fold_paths(run_dir, experiment, f);
        if !json.exists() {
            continue;
        }
        let r: FoldRecord = read_json(&json)?;
        if r.fingerprint != fingerprint {
            if strict {
                return Err(Error::RunMismatch {
                    path: run_dir.to_path_buf(),
                    message: format!(
                        "{} was made with another configuration (fingerprint {}, expected {fingerprint}); use another --run name or remove it",
                        json.display(),
                        r.fingerprint
                    ),
                });
            }
            continue;
        }
        out.push(r);
    }
    Ok(out)
}

fn single_pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(Error::from)
}

/// The distinct networks of some experiments, keyed `variant/Nch`.
fn model_key(c: &ModelConfig) -> String {
    format!("{}/{}ch", c.variant, c.in_channels)
}

/// Throughput (samples/s, summed over workers) of `workers` concurrent single-threaded
/// trainers of `cfg`, and the per-worker speed.
fn measure_folds_mode(
    cfg: &ModelConfig,
    workers: usize,
    batch: usize,
    steps: usize,
) -> Result<(f64, f64)> {
    let speeds: Vec<Result<f64>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..workers)
            .map(|_| s.spawn(move || single_pool(1)?.install(|| measure_speed(cfg, batch, steps))))
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("speed measurement panicked"))
            .collect()
    });
    let speeds: Vec<f64> = speeds.into_iter().collect::<Result<_>>()?;
    let per = speeds.iter().sum::<f64>() / speeds.len() as f64;
    Ok((per * workers as f64, per))
}

/// Timed steps of a speed measurement (after one warm-up step). Measured here: with 3, the
/// folds then ran 8-20% faster than measured (the default run ended at 310 s of a 480 s
/// budget); 6 costs about 3 s more at the start.
const MEASURE_STEPS: usize = 6;

/// Picks the parallel mode and measures every distinct network's speed in it (when
/// `need_speeds`).
fn plan_execution(
    models: &[ModelConfig],
    opts: &AblationOptions,
    need_speeds: bool,
    batch: usize,
) -> Result<ExecutionPlan> {
    let threads = opts.threads.max(1);
    // The schedule's batch (capped): per-sample speed depends on it.
    let batch = batch.clamp(2, 16);
    let ta = models
        .iter()
        .find(|c| c.variant == mer_model::Variant::Ta)
        .copied()
        .unwrap_or(models[0]);
    let mut plan = ExecutionPlan {
        mode: "serial".into(),
        workers: 1,
        threads_per_fold: threads,
        folds_throughput: None,
        serial_throughput: None,
        speeds: Vec::new(),
        budget_secs: None,
        training_budget_secs: None,
        predicted_training_secs: None,
    };
    let mode = match (opts.parallelism, threads) {
        (_, 1) => Parallelism::Serial,
        (Parallelism::Auto, _) => {
            tracing::info!(
                "measuring training speed: one fold per core vs one fold on {threads} cores"
            );
            let (folds_tp, _) = measure_folds_mode(&ta, threads, batch, MEASURE_STEPS)?;
            let serial_tp =
                single_pool(threads)?.install(|| measure_speed(&ta, batch, MEASURE_STEPS))?;
            plan.folds_throughput = Some(folds_tp);
            plan.serial_throughput = Some(serial_tp);
            tracing::info!(
                "{}: {folds_tp:.1} samples/s with {threads} folds in parallel, {serial_tp:.1} samples/s with one fold on {threads} threads",
                model_key(&ta)
            );
            if folds_tp >= serial_tp {
                Parallelism::Folds
            } else {
                Parallelism::Serial
            }
        }
        (p, _) => p,
    };
    if mode == Parallelism::Folds {
        plan.mode = "folds".into();
        plan.workers = threads;
        plan.threads_per_fold = 1;
    }
    if need_speeds {
        let mut seen = std::collections::HashSet::new();
        for c in models {
            if !seen.insert(model_key(c)) {
                continue;
            }
            let per = if plan.mode == "folds" {
                measure_folds_mode(c, plan.workers, batch, MEASURE_STEPS)?.1
            } else {
                single_pool(threads)?.install(|| measure_speed(c, batch, MEASURE_STEPS))?
            };
            tracing::info!("{}: {per:.1} training samples/s per worker", model_key(c));
            plan.speeds.push(SpeedRecord {
                model: model_key(c),
                samples_per_sec: per,
            });
        }
    }
    Ok(plan)
}

/// Seconds one worker needs for `jobs` at `epochs` epochs (training, plus the test-fold
/// evaluations at about a third of the training cost per sample).
fn predict_secs(
    jobs: &[(ModelConfig, usize, usize)],
    speeds: &HashMap<String, f64>,
    epochs: usize,
    observations: usize,
) -> f64 {
    jobs.iter()
        .map(|(c, n_train, n_test)| {
            let s = speeds.get(&model_key(c)).copied().unwrap_or(1.0).max(1e-6);
            (epochs * n_train) as f64 / s + (observations * n_test) as f64 / (3.0 * s)
        })
        .sum()
}

/// Sizes the epochs of a budgeted schedule: the largest number (within the schedule's
/// bounds) whose predicted wall time fits the time left.
fn size_epochs(
    spec: &ScheduleSpec,
    jobs: &[(ModelConfig, usize, usize)],
    plan: &mut ExecutionPlan,
    time_left: f64,
) -> usize {
    let speeds: HashMap<String, f64> = plan
        .speeds
        .iter()
        .map(|s| (s.model.clone(), s.samples_per_sec))
        .collect();
    // A margin for measurement noise and load that changes during the run (measured here:
    // folds ran 5-20% slower than the few timed steps), and parallel workers idle at the
    // end of the queue.
    let efficiency = if plan.workers > 1 { 0.8 } else { 0.9 };
    let capacity = time_left.max(0.0) * plan.workers as f64 * efficiency;
    let mut epochs = spec.min_epochs;
    for e in spec.min_epochs..=spec.max_epochs {
        let obs = spec.resolve("x", e).observation_epochs().len();
        if predict_secs(jobs, &speeds, e, obs) <= capacity {
            epochs = e;
        } else {
            break;
        }
    }
    let obs = spec.resolve("x", epochs).observation_epochs().len();
    plan.training_budget_secs = Some(time_left);
    plan.predicted_training_secs =
        Some(predict_secs(jobs, &speeds, epochs, obs) / (capacity / time_left.max(1e-9)).max(1e-9));
    epochs
}

/// Seconds kept back from the budget for the report and the manifest.
const REPORT_RESERVE_SECS: f64 = 20.0;

/// Runs the ablation experiments: see the module documentation.
pub fn run_ablation(opts: &AblationOptions) -> Result<RunOutcome> {
    let t0 = Instant::now();
    let file = ExperimentsFile::load(&opts.experiments_file)?;
    let selected = file.select(&opts.only)?;
    let spec = file
        .schedule(&opts.schedule, &opts.experiments_file)?
        .clone();
    if opts.run_name.is_empty()
        || opts.run_name.contains(['/', '\\'])
        || opts.run_name.starts_with('.')
    {
        return Err(Error::Invalid(format!(
            "run name `{}`: expected a plain folder name",
            opts.run_name
        )));
    }
    let run_dir = opts.results_dir.join(&opts.run_name);
    std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;

    // Data: the sample list, as the data crate indexes it.
    let root = opts.data.root().to_path_buf();
    if let DataSource::Synthetic(p) = &opts.data {
        let r = mer_data::ensure_default_synth(p)?;
        tracing::info!(
            "synthetic database at {} ({} samples)",
            p.display(),
            r.samples
        );
    }
    let index = index_root(&root, &IndexOptions::default())?;
    if !index.dropped.is_empty() {
        tracing::info!(
            "{} annotation rows not usable (see `cargo xtask index`)",
            index.dropped.len()
        );
    }
    let samples = index.list();
    let folds = loso_folds(&samples);
    if folds.len() < 2 {
        return Err(Error::TooFewSubjects {
            root: root.clone(),
            samples: samples.len(),
            subjects: folds.len(),
        });
    }
    let list_text = format_list(&samples);
    let list_hash = fnv1a64_hex(list_text.as_bytes());
    write_atomic(&run_dir.join("samples.csv"), list_text.as_bytes())?;
    tracing::info!(
        "{} samples, {} LOSO folds, {} experiments",
        samples.len(),
        folds.len(),
        selected.len()
    );

    // Features: computed once into the cache (with a progress bar), then read per kind.
    let t_feat = Instant::now();
    let cache = FeatureCache::new(&opts.cache_dir, FeatureConfig::default());
    let rep = ensure_features(&root, &samples, None, &cache)?;
    let feature_secs = t_feat.elapsed().as_secs_f64();
    tracing::info!(
        "features: {} computed, {} reused in {feature_secs:.1} s",
        rep.computed,
        rep.reused
    );
    let labels: Vec<usize> = samples.iter().map(|s| s.class.index()).collect();
    let ids = sample_ids(&samples);
    let mut inputs: HashMap<InputKind, Tensor> = HashMap::new();
    for e in &selected {
        let k = e.input_kind()?;
        if let std::collections::hash_map::Entry::Vacant(v) = inputs.entry(k) {
            let data = cache.load(&samples, k)?;
            v.insert(Tensor::from_vec(
                data,
                (samples.len(), k.channels(), 112, 112),
                &Device::Cpu,
            )?);
        }
    }

    // The run's state: fixed at the first start, reused by a rerun.
    let state_path = run_dir.join("run.json");
    let mut state = if state_path.exists() {
        let s: RunState = read_json(&state_path)?;
        let mismatch = |message: String| Error::RunMismatch {
            path: run_dir.clone(),
            message,
        };
        if s.list_hash != list_hash {
            return Err(mismatch(format!(
                "its sample list (hash {}) differs from {}'s (hash {list_hash}); use another --run name",
                s.list_hash,
                root.display()
            )));
        }
        if s.schedule.name != opts.schedule {
            return Err(mismatch(format!(
                "it was run with schedule `{}`, not `{}`",
                s.schedule.name, opts.schedule
            )));
        }
        if opts.epochs.is_none() && opts.budget_secs != s.plan.budget_secs {
            let show =
                |b: Option<f64>| b.map_or("none (fixed epochs)".to_string(), |b| format!("{b} s"));
            return Err(mismatch(format!(
                "setting `budget` differs: the run folder has {}, this invocation {}; use another --run name or remove the folder",
                show(s.plan.budget_secs),
                show(opts.budget_secs)
            )));
        }
        if opts.epochs.is_some_and(|e| e != s.schedule.epochs) {
            return Err(mismatch(format!(
                "it was run with {} epochs",
                s.schedule.epochs
            )));
        }
        if spec.resolve(&opts.schedule, s.schedule.epochs) != s.schedule || s.seed != file.seed {
            return Err(mismatch(format!(
                "schedule `{}` or the seed in {} changed since the run started; use another --run name or remove the folder",
                opts.schedule,
                opts.experiments_file.display()
            )));
        }
        for e in &selected {
            if let Some(old) = s.experiments.get(&e.name) {
                if (old.variant.as_str(), old.input.as_str())
                    != (e.variant.as_str(), e.input.as_str())
                {
                    return Err(mismatch(format!(
                        "experiment `{}` was {} on {} there",
                        e.name, old.variant, old.input
                    )));
                }
            }
        }
        tracing::info!(
            "resuming run {} ({} epochs, {} mode)",
            s.run,
            s.schedule.epochs,
            s.plan.mode
        );
        s
    } else {
        // Fixed unless a budget is asked for (or the schedule has no epochs).
        let fixed = opts.epochs.or(if opts.budget_secs.is_some() {
            None
        } else {
            spec.epochs
        });
        let dropout = spec.dropout.unwrap_or(0.5);
        let models: Vec<ModelConfig> = selected
            .iter()
            .map(|e| e.model_config(dropout))
            .collect::<Result<_>>()?;
        let mut plan = plan_execution(&models, opts, fixed.is_none(), spec.batch_size)?;
        let epochs = match fixed {
            Some(e) => e,
            None => {
                let budget = opts.budget_secs.or(spec.budget_secs).unwrap_or(600.0);
                let jobs: Vec<(ModelConfig, usize, usize)> = models
                    .iter()
                    .flat_map(|c| folds.iter().map(move |f| (*c, f.train.len(), f.test.len())))
                    .collect();
                let left = budget - t0.elapsed().as_secs_f64() - REPORT_RESERVE_SECS;
                plan.budget_secs = Some(budget);
                let e = size_epochs(&spec, &jobs, &mut plan, left);
                tracing::info!(
                    "schedule `{}` sized to {e} epochs: {left:.0} s left of the {budget:.0} s budget, predicted training {:.0} s",
                    opts.schedule,
                    plan.predicted_training_secs.unwrap_or(0.0)
                );
                e
            }
        };
        let s = RunState {
            version: RUN_STATE_VERSION,
            run: opts.run_name.clone(),
            schedule: spec.resolve(&opts.schedule, epochs),
            seed: file.seed,
            // A folder the synthetic generator wrote counts as synthetic, wherever it is.
            data_kind: if opts.data.is_synthetic() || mer_data::synth::read_marker(&root).is_some()
            {
                "synthetic"
            } else {
                "root"
            }
            .into(),
            data_root: root.clone(),
            cache_dir: opts.cache_dir.clone(),
            list_hash: list_hash.clone(),
            samples: samples.len(),
            folds: folds.len(),
            experiments_file: opts.experiments_file.clone(),
            experiments: BTreeMap::new(),
            tables: file.tables.clone(),
            plan,
            created_unix: now_unix(),
        };
        s
    };
    for e in &selected {
        state.experiments.insert(e.name.clone(), e.clone());
    }
    state.tables = file.tables.clone();
    write_json(&state_path, &state)?;
    let sch = &state.schedule;
    eprintln!(
        "schedule `{}`: {} epochs, batch {}, Adam lr {} x{} every {} epochs, observed every {} epochs (+ the last); {} mode, {} worker(s) x {} thread(s)",
        sch.name, sch.epochs, sch.batch_size, sch.lr, sch.lr_decay, sch.lr_step, sch.eval_every, state.plan.mode, state.plan.workers, state.plan.threads_per_fold
    );

    // The jobs: every (experiment, fold) not finished yet.
    struct Job {
        exp: usize,
        fold: usize,
        cost: f64,
    }
    let speeds: HashMap<String, f64> = state
        .plan
        .speeds
        .iter()
        .map(|s| (s.model.clone(), s.samples_per_sec))
        .collect();
    let mut jobs = Vec::new();
    let mut reused = 0;
    let mut fingerprints = Vec::new();
    let mut configs = Vec::new();
    for (ei, e) in selected.iter().enumerate() {
        let fp = fingerprint(e, sch, state.seed, &state.list_hash);
        let done = load_fold_records(&run_dir, &e.name, &folds, &fp, true)?;
        let cfg = e.model_config(sch.dropout)?;
        for (fi, f) in folds.iter().enumerate() {
            if done.iter().any(|r| r.fold == f.number) {
                reused += 1;
            } else {
                let cost =
                    f.train.len() as f64 / speeds.get(&model_key(&cfg)).copied().unwrap_or(1.0);
                jobs.push(Job {
                    exp: ei,
                    fold: fi,
                    cost,
                });
            }
        }
        fingerprints.push(fp);
        configs.push(cfg);
    }
    if reused > 0 {
        tracing::info!("{reused} folds already finished, {} to train", jobs.len());
    }
    // Longest first: the parallel workers finish together.
    if state.plan.workers > 1 {
        jobs.sort_by(|a, b| b.cost.total_cmp(&a.cost));
    }
    let total_jobs = jobs.len();
    let queue = Mutex::new(jobs.into_iter().collect::<VecDeque<_>>());
    let multi = MultiProgress::new();
    if !opts.progress {
        multi.set_draw_target(ProgressDrawTarget::hidden());
    }
    let folds_bar = multi.add(ProgressBar::new(total_jobs as u64));
    folds_bar.set_style(
        ProgressStyle::with_template("folds  [{bar:30}] {pos}/{len} ({elapsed}, eta {eta}) {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let trained = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let t_train = Instant::now();
    let workers = state.plan.workers.max(1);
    let threads_per_fold = state.plan.threads_per_fold.max(1);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let pool = match single_pool(threads_per_fold) {
                    Ok(p) => p,
                    Err(e) => {
                        first_error.lock().unwrap().get_or_insert(e);
                        stop.store(true, Ordering::SeqCst);
                        return;
                    }
                };
                let bar = multi.add(ProgressBar::new(sch.epochs as u64));
                bar.set_style(
                    ProgressStyle::with_template(
                        "  {msg:28} [{bar:20}] epoch {pos}/{len} (eta {eta})",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                loop {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Some(job) = queue.lock().unwrap().pop_front() else {
                        break;
                    };
                    let e = &selected[job.exp];
                    let f = &folds[job.fold];
                    bar.reset();
                    bar.set_message(format!("{} {}", e.name, f.subject_id()));
                    let x = &inputs[&e.input_kind().expect("validated")];
                    let fj = FoldJob {
                        experiment: &e.name,
                        fingerprint: &fingerprints[job.exp],
                        model: configs[job.exp],
                        schedule: sch,
                        seed: state.seed,
                        fold: f,
                        x,
                        labels: &labels,
                        ids: &ids,
                    };
                    let res = pool
                        .install(|| train_fold(&fj, &|ep| bar.set_position(ep as u64 + 1)))
                        .and_then(|(rec, model)| {
                            let (json, weights) = fold_paths(&run_dir, &e.name, f);
                            write_atomic_with(&weights, |tmp: &Path| -> Result<()> {
                                Ok(model.save_safetensors(tmp)?)
                            })?;
                            write_json(&json, &rec)?;
                            Ok(rec)
                        });
                    match res {
                        Ok(rec) => {
                            let last = rec.observations.last().map_or(0.0, |o| o.uar);
                            let line = format!(
                                "{:<10} fold {:>2}/{} {:<14} n_test {:>2}  UAR@last {:.3}  {:.1} s",
                                e.name,
                                f.number,
                                folds.len(),
                                f.subject_id(),
                                rec.truth.len(),
                                last,
                                rec.seconds
                            );
                            if multi.is_hidden() {
                                tracing::info!("{line}");
                            } else {
                                let _ = multi.println(line);
                            }
                            folds_bar.inc(1);
                            let n = trained.fetch_add(1, Ordering::SeqCst) + 1;
                            if opts.stop_after_folds.is_some_and(|k| n >= k) {
                                stop.store(true, Ordering::SeqCst);
                            }
                        }
                        Err(err) => {
                            first_error.lock().unwrap().get_or_insert(Error::Fold {
                                experiment: e.name.clone(),
                                fold: f.number,
                                subject: f.subject_id(),
                                source: Box::new(err),
                            });
                            stop.store(true, Ordering::SeqCst);
                        }
                    }
                }
                bar.finish_and_clear();
            });
        }
    });
    folds_bar.finish_and_clear();
    if let Some(e) = first_error.into_inner().unwrap() {
        return Err(e);
    }
    let trained = trained.into_inner();
    let training_secs = t_train.elapsed().as_secs_f64();
    if trained < total_jobs {
        return Err(Error::Stopped(trained));
    }

    // Report over every experiment of the run folder.
    let timing = Timing {
        started_unix: now_unix().saturating_sub(t0.elapsed().as_secs()),
        wall_secs: t0.elapsed().as_secs_f64(),
        feature_secs,
        training_secs,
        trained_folds: trained,
        reused_folds: reused,
    };
    let summaries = write_report(&run_dir, &state, &folds, &samples, opts, &timing)?;
    let wall_secs = t0.elapsed().as_secs_f64();
    Ok(RunOutcome {
        report: run_dir.join("REPORT.md"),
        run_dir,
        summaries,
        state,
        trained_folds: trained,
        reused_folds: reused,
        wall_secs,
    })
}

/// Timings of one invocation, for the manifest and the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Start (seconds since the Unix epoch).
    pub started_unix: u64,
    /// Wall time up to the report (seconds).
    pub wall_secs: f64,
    /// Feature extraction (seconds, including cache checks).
    pub feature_secs: f64,
    /// Training (seconds).
    pub training_secs: f64,
    /// Folds trained.
    pub trained_folds: usize,
    /// Folds reused from the run folder.
    pub reused_folds: usize,
}
