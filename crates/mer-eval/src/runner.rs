//! The experiment runner behind `cargo xtask ablation`, in three steps:
//!
//! 1. [`prepare`]: the data (the synthetic database is generated if absent), the sample
//!    list, the features (computed once into the cache), and the run folder's settings
//!    (created exclusively by the first invocation, checked by every other, see
//!    [`crate::run_dir`]);
//! 2. [`plan_cells_of`]: the cells (experiment x seed x fold) of this invocation's shard
//!    that are not finished yet;
//! 3. [`train_cells`]: training them, one cell per worker or one cell on all cores, each
//!    finished cell written atomically (weights first, then the record), progress reported
//!    through a callback ([`Progress`]);
//!
//! and then, for a run that is not sharded, the report ([`crate::report::write_report`],
//! the same code as `cargo xtask report`). A killed invocation loses only its cells in
//! progress; rerunning it skips the finished ones. Cells are independent, so any number of
//! invocations (shards, on any machines sharing the folder) can fill one run.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mer_data::features::{ensure_features, FeatureCache, FeatureConfig, InputKind};
use mer_data::index::IndexOptions;
use mer_data::list::format_list;
use mer_data::megc::{index_benchmark, Benchmark, SmicApex};
use mer_data::SampleMeta;
use mer_model::candle_core::{Device, Tensor};
use mer_model::ModelSpec;
use serde::{Deserialize, Serialize};

use crate::config::{ExperimentSpec, ExperimentsFile, Schedule, ScheduleSpec};
use crate::io::{fnv1a64_hex, write_atomic, write_atomic_with, write_json};
use crate::loso::{loso_folds, Fold};
use crate::plan::{plan_cells, shard_cells, ExperimentCost, PlannedCell, Shard};
use crate::report::{write_report, ReportOutcome};
use crate::run_dir::{
    check_same_experiment, fingerprint, now_unix, CellKey, ExecutionPlan, Grid, InvocationRecord,
    RunFolder, RunSettings, Sizing, SpeedRecord, Timing, RUN_FORMAT,
};
use crate::train::{measure_speed, train_fold, FoldJob};
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

/// How cells share the cores. Whatever the choice, a cell trains to the same bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Parallelism {
    /// Measure both and take the faster (default).
    Auto,
    /// One cell per worker, each cell's tensor operations on one thread.
    Folds,
    /// One cell at a time on all cores.
    Serial,
}

/// Provenance recorded in the invocation records and the manifest (the library does not
/// run git).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The source commit (`git describe`-like, with a dirty flag), if known.
    pub commit: String,
    /// The command line.
    pub command: String,
}

/// What the runner reports while it works (drawn as progress bars by the command line).
#[derive(Debug, Clone, PartialEq)]
pub enum ProgressEvent {
    /// Training starts: `cells` to train, `epochs` each, on `workers` workers.
    Planned {
        /// Cells to train in this invocation.
        cells: usize,
        /// Epochs per cell.
        epochs: usize,
        /// Concurrent workers.
        workers: usize,
    },
    /// Worker `worker` started a cell.
    CellStarted {
        /// The worker (0-based).
        worker: usize,
        /// The cell.
        cell: CellKey,
        /// Its left-out subject (`dataset/subject`).
        subject: String,
    },
    /// Worker `worker` finished epoch `epoch` (1-based) of its cell.
    Epoch {
        /// The worker.
        worker: usize,
        /// Epochs done.
        epoch: usize,
    },
    /// Worker `worker` finished and saved a cell; `line` summarises it.
    CellFinished {
        /// The worker.
        worker: usize,
        /// The cell.
        cell: CellKey,
        /// One line for a log.
        line: String,
    },
    /// Training ended (all cells, or stopped).
    TrainingDone,
}

/// A progress callback (called from the worker threads).
#[derive(Clone)]
pub struct Progress(Arc<dyn Fn(&ProgressEvent) + Send + Sync>);

impl Progress {
    /// A callback.
    pub fn new(f: impl Fn(&ProgressEvent) + Send + Sync + 'static) -> Self {
        Progress(Arc::new(f))
    }
    /// Logs finished cells through `tracing` and nothing else.
    pub fn log() -> Self {
        Progress::new(|e| {
            if let ProgressEvent::CellFinished { line, .. } = e {
                tracing::info!("{line}");
            }
        })
    }
    fn emit(&self, e: ProgressEvent) {
        (self.0)(&e)
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::log()
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress(..)")
    }
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
    /// The seeds (empty: the experiments file's seed alone). Seed 0 trains with the same
    /// random streams as a run without seeds.
    pub seeds: Vec<u64>,
    /// Run only this shard of the cells (all cells when absent).
    pub shard: Option<Shard>,
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
    /// The benchmark: which databases under the data folder, with which rules.
    pub benchmark: Benchmark,
    /// How SMIC's apex is chosen (the MEGC 2019 benchmark).
    pub smic_apex: SmicApex,
    /// How cells share the cores.
    pub parallelism: Parallelism,
    /// Cores to use.
    pub threads: usize,
    /// Stop (with [`Error::Stopped`]) once this many cells have been trained in this
    /// invocation: simulates an interrupted run.
    pub stop_after_cells: Option<usize>,
    /// Progress callback.
    pub progress: Progress,
    /// Recorded in the invocation record and the manifest.
    pub provenance: Provenance,
}

/// What [`run_ablation`] did.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The run folder.
    pub run_dir: PathBuf,
    /// The report (absent for a shard: `cargo xtask report` merges the shards).
    pub report: Option<ReportOutcome>,
    /// The run's settings.
    pub settings: RunSettings,
    /// Cells of this invocation's shard (all cells without a shard).
    pub shard_cells: usize,
    /// Cells trained by this invocation.
    pub trained_cells: usize,
    /// Cells of the shard found finished.
    pub reused_cells: usize,
    /// Wall time of this invocation (seconds).
    pub wall_secs: f64,
}

/// The sample ids `dataset/subject/sample`.
pub fn sample_ids(samples: &[SampleMeta]) -> Vec<String> {
    samples.iter().map(SampleMeta::id).collect()
}

/// A run folder made ready for training: data indexed, features cached, settings agreed.
#[derive(Debug)]
pub struct Prepared {
    /// The run folder.
    pub folder: RunFolder,
    /// Its settings.
    pub settings: RunSettings,
    /// The data folder.
    pub root: PathBuf,
    /// This invocation's feature cache (the settings record the creator's).
    pub cache_dir: PathBuf,
    /// The samples, in list order.
    pub samples: Vec<SampleMeta>,
    /// Their LOSO folds.
    pub folds: Vec<Fold>,
    /// The experiments of this invocation.
    pub experiments: Vec<ExperimentSpec>,
    /// Its seeds.
    pub seeds: Vec<u64>,
    /// The execution plan, when preparing had to measure speeds (a budgeted new run).
    pub measured_plan: Option<ExecutionPlan>,
    /// Seconds spent on features.
    pub feature_secs: f64,
    started: Instant,
}

impl Prepared {
    /// This invocation's grid.
    pub fn grid(&self) -> Grid {
        Grid {
            experiments: self
                .experiments
                .iter()
                .map(|e| (e.name.clone(), e.clone()))
                .collect(),
            seeds: self.seeds.clone(),
        }
    }
}

fn single_pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(Error::from)
}

/// Throughput (samples/s, summed over workers) of `workers` concurrent single-threaded
/// trainers of `cfg`, and the per-worker speed.
fn measure_folds_mode(
    cfg: &ModelSpec,
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

/// Picks how cells share the cores (measuring both ways for `auto`, when there are at
/// least as many cells as cores) and, when `need_speeds`, every distinct network's speed.
fn plan_execution(
    models: &[ModelSpec],
    opts: &AblationOptions,
    cells: usize,
    need_speeds: bool,
    batch: usize,
) -> Result<(ExecutionPlan, Vec<SpeedRecord>)> {
    let threads = opts.threads.max(1);
    // The schedule's batch (capped): per-sample speed depends on it.
    let batch = batch.clamp(2, 16);
    let ta = models
        .iter()
        .find(|c| matches!(c, ModelSpec::OffTaNet(m) if m.variant == mer_model::Variant::Ta))
        .copied()
        .unwrap_or(models[0]);
    let mut plan = ExecutionPlan {
        mode: "serial".into(),
        workers: 1,
        threads_per_cell: threads,
        folds_throughput: None,
        serial_throughput: None,
    };
    let mode = match (opts.parallelism, threads) {
        (_, 1) => Parallelism::Serial,
        (Parallelism::Auto, _) if cells < threads && !need_speeds => Parallelism::Serial,
        (Parallelism::Auto, _) => {
            tracing::info!(
                "measuring training speed: one cell per core vs one cell on {threads} cores"
            );
            let (folds_tp, _) = measure_folds_mode(&ta, threads, batch, MEASURE_STEPS)?;
            let serial_tp =
                single_pool(threads)?.install(|| measure_speed(&ta, batch, MEASURE_STEPS))?;
            plan.folds_throughput = Some(folds_tp);
            plan.serial_throughput = Some(serial_tp);
            tracing::info!(
                "{}: {folds_tp:.1} samples/s with {threads} cells in parallel, {serial_tp:.1} samples/s with one cell on {threads} threads",
                ta.key()
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
        plan.threads_per_cell = 1;
    }
    let mut speeds = Vec::new();
    if need_speeds {
        let mut seen = std::collections::HashSet::new();
        for c in models {
            if !seen.insert(c.key()) {
                continue;
            }
            let per = if plan.mode == "folds" {
                measure_folds_mode(c, plan.workers, batch, MEASURE_STEPS)?.1
            } else {
                single_pool(threads)?.install(|| measure_speed(c, batch, MEASURE_STEPS))?
            };
            tracing::info!("{}: {per:.1} training samples/s per worker", c.key());
            speeds.push(SpeedRecord {
                model: c.key(),
                samples_per_sec: per,
            });
        }
    }
    Ok((plan, speeds))
}

/// One cell to size a budget with: its experiment's network and schedule (in a run of the
/// candidate schedule), its fold's training and test samples.
struct SizingJob<'a> {
    experiment: &'a ExperimentSpec,
    model: ModelSpec,
    n_train: usize,
    n_test: usize,
}

/// Seconds one worker needs for `jobs` in a run of schedule `run` (training, plus the
/// test-fold evaluations at about a third of the training cost per sample); each
/// experiment trains its own schedule's epochs.
fn predict_secs(jobs: &[SizingJob], speeds: &HashMap<String, f64>, run: &Schedule) -> f64 {
    jobs.iter()
        .map(|j| {
            let s = speeds.get(&j.model.key()).copied().unwrap_or(1.0).max(1e-6);
            let es = j.experiment.schedule(run);
            let obs = es.observation_epochs().len();
            (es.epochs * j.n_train) as f64 / s + (obs * j.n_test) as f64 / (3.0 * s)
        })
        .sum()
}

/// Sizes the epochs of a budgeted schedule: the largest number (within the schedule's
/// bounds) whose predicted wall time fits the time left.
fn size_epochs(
    spec: &ScheduleSpec,
    name: &str,
    jobs: &[SizingJob],
    workers: usize,
    speeds: &[SpeedRecord],
    budget: f64,
    time_left: f64,
) -> (usize, Sizing) {
    let by_model: HashMap<String, f64> = speeds
        .iter()
        .map(|s| (s.model.clone(), s.samples_per_sec))
        .collect();
    // A margin for measurement noise and load that changes during the run (measured here:
    // folds ran 5-20% slower than the few timed steps), and parallel workers idle at the
    // end of the queue.
    let efficiency = if workers > 1 { 0.8 } else { 0.9 };
    let capacity = time_left.max(0.0) * workers as f64 * efficiency;
    let mut epochs = spec.min_epochs;
    for e in spec.min_epochs..=spec.max_epochs {
        if predict_secs(jobs, &by_model, &spec.resolve(name, e)) <= capacity {
            epochs = e;
        } else {
            break;
        }
    }
    let predicted = predict_secs(jobs, &by_model, &spec.resolve(name, epochs))
        / (capacity / time_left.max(1e-9)).max(1e-9);
    (
        epochs,
        Sizing {
            budget_secs: budget,
            training_budget_secs: time_left,
            predicted_training_secs: predicted,
            workers,
            speeds: speeds.to_vec(),
        },
    )
}

/// Seconds kept back from the budget for the report and the manifest.
const REPORT_RESERVE_SECS: f64 = 20.0;

/// The benchmark's name in settings and reports.
pub fn benchmark_name(b: Benchmark) -> &'static str {
    match b {
        Benchmark::OffTanet => "offtanet",
        Benchmark::Megc2019 => "megc2019",
    }
}

/// Step 1: data, features and the run folder's settings (see the module documentation).
pub fn prepare(opts: &AblationOptions) -> Result<Prepared> {
    let started = Instant::now();
    let file = ExperimentsFile::load(&opts.experiments_file)?;
    let experiments = file.select(&opts.only)?;
    let spec = file
        .schedule(&opts.schedule, &opts.experiments_file)?
        .clone();
    let folder = RunFolder::new(&opts.results_dir, &opts.run_name)?;
    std::fs::create_dir_all(&folder.dir).map_err(|e| Error::io(&folder.dir, e))?;
    let mut seeds: Vec<u64> = Vec::new();
    for s in if opts.seeds.is_empty() {
        vec![file.seed]
    } else {
        opts.seeds.clone()
    } {
        if !seeds.contains(&s) {
            seeds.push(s);
        }
    }

    // Data: the sample list, as the data crate indexes it. The synthetic database of the
    // MEGC benchmark also holds SMIC and SAMM: it lives beside the default one
    // (`<folder>-megc`), whose three CASME databases it repeats bit for bit.
    let megc = opts.benchmark == Benchmark::Megc2019;
    let root = match &opts.data {
        DataSource::Synthetic(p) if megc => {
            let name = p
                .file_name()
                .map_or("synthetic".into(), |n| n.to_string_lossy().into_owned());
            p.with_file_name(format!("{name}-megc"))
        }
        d => d.root().to_path_buf(),
    };
    if opts.data.is_synthetic() {
        let cfg = mer_data::SynthConfig {
            megc,
            ..mer_data::SynthConfig::default()
        };
        let r = mer_data::ensure_synth(&root, &cfg)?;
        tracing::info!(
            "synthetic database at {} ({} samples)",
            root.display(),
            r.samples
        );
    }
    let index = index_benchmark(
        &root,
        opts.benchmark,
        &IndexOptions::default(),
        opts.smic_apex,
    )?;
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
    tracing::info!(
        "{} samples, {} LOSO folds, {} experiments x {} seed(s)",
        samples.len(),
        folds.len(),
        experiments.len(),
        seeds.len()
    );

    // Features: computed once into the cache (with a progress bar).
    // One cache per input size the experiments need (112 for Off-TANet; the baselines'
    // 28 and 224 are computed the same way at their own size).
    let t_feat = Instant::now();
    for size in input_sizes(&experiments) {
        let rep = ensure_features(&root, &samples, None, &feature_cache(&opts.cache_dir, size))?;
        tracing::info!(
            "features {size}x{size}: {} computed, {} reused",
            rep.computed,
            rep.reused
        );
    }
    let feature_secs = t_feat.elapsed().as_secs_f64();
    tracing::info!("features ready in {feature_secs:.1} s");

    // The settings: the run folder's if it has them (checked), else this invocation's
    // (sized first when a budget is asked for), created exclusively.
    let existing = if folder.dir.join("run.json").exists() {
        Some(folder.settings()?)
    } else {
        None
    };
    let fixed = opts.epochs.or(if opts.budget_secs.is_some() {
        None
    } else {
        spec.epochs
    });
    let dropout = spec.dropout.unwrap_or(0.5);
    let models: Vec<ModelSpec> = experiments
        .iter()
        .map(|e| e.model_spec(dropout))
        .collect::<Result<_>>()?;
    if fixed.is_none() && opts.shard.is_some() {
        return Err(Error::Invalid(
            "a budget sizes the epochs for the cores of one machine; shards need fixed epochs (--epochs or the schedule's)".into(),
        ));
    }
    let budget = opts.budget_secs.or(spec.budget_secs).unwrap_or(600.0);
    let mut measured_plan = None;
    let (epochs, sizing) = match (fixed, &existing) {
        (Some(e), _) => (e, None),
        // Resuming a sized schedule: the folder's epochs, without measuring again (a
        // different budget, or none in the folder, is refused by the check below).
        (None, Some(s)) => {
            let sizing = match &s.sizing {
                Some(z) => Sizing {
                    budget_secs: budget,
                    ..z.clone()
                },
                None => Sizing {
                    budget_secs: budget,
                    training_budget_secs: 0.0,
                    predicted_training_secs: 0.0,
                    workers: 0,
                    speeds: Vec::new(),
                },
            };
            (s.schedule.epochs, Some(sizing))
        }
        (None, None) => {
            let n_cells = experiments.len() * seeds.len() * folds.len();
            let (plan, speeds) = plan_execution(&models, opts, n_cells, true, spec.batch_size)?;
            let mut jobs: Vec<SizingJob> = Vec::new();
            for (experiment, &model) in experiments.iter().zip(&models) {
                for _ in &seeds {
                    jobs.extend(folds.iter().map(|f| SizingJob {
                        experiment,
                        model,
                        n_train: f.train.len(),
                        n_test: f.test.len(),
                    }));
                }
            }
            let left = budget - started.elapsed().as_secs_f64() - REPORT_RESERVE_SECS;
            let (e, sizing) = size_epochs(
                &spec,
                &opts.schedule,
                &jobs,
                plan.workers,
                &speeds,
                budget,
                left,
            );
            tracing::info!(
                "schedule `{}` sized to {e} epochs: {left:.0} s left of the {budget:.0} s budget, predicted training {:.0} s",
                opts.schedule,
                sizing.predicted_training_secs
            );
            measured_plan = Some(plan);
            (e, Some(sizing))
        }
    };
    let wanted = RunSettings {
        version: RUN_FORMAT,
        run: opts.run_name.clone(),
        schedule: Schedule {
            epochs_given: opts.epochs.is_some(),
            ..spec.resolve(&opts.schedule, epochs)
        },
        sizing,
        base_seed: file.seed,
        benchmark: benchmark_name(opts.benchmark).into(),
        smic_apex: match opts.smic_apex {
            mer_data::megc::SmicApex::Middle => "middle",
            mer_data::megc::SmicApex::Spotted => "spotted",
        }
        .into(),
        // A folder the synthetic generator wrote counts as synthetic, wherever it is.
        data_kind: if opts.data.is_synthetic() || mer_data::synth::read_marker(&root).is_some() {
            "synthetic"
        } else {
            "root"
        }
        .into(),
        data_root: root.clone(),
        cache_dir: opts.cache_dir.clone(),
        list_hash,
        samples: samples.len(),
        folds: folds.len(),
        experiments_file: opts.experiments_file.clone(),
        tables: file.tables.clone(),
        created_unix: now_unix(),
    };
    // Refused before anything is written into a folder of other settings.
    if let Some(s) = &existing {
        s.check(&wanted, opts.epochs.is_some(), &folder.dir)?;
    }
    let (settings, created) = folder.create(&wanted)?;
    // A concurrent creator sized its own epochs: compare at the folder's.
    let wanted = if !created && fixed.is_none() {
        RunSettings {
            schedule: Schedule {
                epochs_given: wanted.schedule.epochs_given,
                ..spec.resolve(&opts.schedule, settings.schedule.epochs)
            },
            ..wanted
        }
    } else {
        wanted
    };
    settings.check(&wanted, opts.epochs.is_some(), &folder.dir)?;
    // The list only once the settings (and so the list's hash) are agreed.
    write_atomic(&folder.samples_path(), list_text.as_bytes())?;
    if !created {
        tracing::info!(
            "run {}: {} epochs (settings from its run.json)",
            settings.run,
            settings.schedule.epochs
        );
    }
    // The experiments' definitions must agree with earlier invocations'; shards of one
    // count must share one grid (else their partitions would not cover it).
    let earlier = folder.invocations()?;
    let grid = Grid {
        experiments: experiments
            .iter()
            .map(|e| (e.name.clone(), e.clone()))
            .collect(),
        seeds: seeds.clone(),
    };
    for inv in &earlier {
        for (name, e) in &inv.grid.experiments {
            if let Some(mine) = grid.experiments.get(name) {
                check_same_experiment(e, mine, &folder.dir)?;
            }
        }
        if let (Some(theirs), Some(mine)) = (&inv.shard, opts.shard) {
            let same_count = theirs.parse::<Shard>().is_ok_and(|s| s.count == mine.count);
            if same_count && inv.grid != grid {
                return Err(Error::RunMismatch {
                    path: folder.dir.clone(),
                    message: format!(
                        "setting `grid` differs from shard {theirs}'s (experiments {} x seeds {:?}; this shard: {} x {:?}): \
shards of one run must be given the same --only and seeds",
                        inv.grid.experiments.keys().cloned().collect::<Vec<_>>().join(","),
                        inv.grid.seeds,
                        grid.experiments.keys().cloned().collect::<Vec<_>>().join(","),
                        grid.seeds
                    ),
                });
            }
        }
    }
    Ok(Prepared {
        folder,
        settings,
        root,
        cache_dir: opts.cache_dir.clone(),
        samples,
        folds,
        experiments,
        seeds,
        measured_plan,
        feature_secs,
        started,
    })
}

/// The distinct input sizes of some experiments, ascending.
fn input_sizes(experiments: &[ExperimentSpec]) -> Vec<usize> {
    let mut sizes: Vec<usize> = experiments.iter().map(|e| e.input_size()).collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// The feature cache of inputs of side `size` under `cache_dir`.
pub fn feature_cache(cache_dir: &Path, size: usize) -> FeatureCache {
    FeatureCache::new(
        cache_dir,
        FeatureConfig {
            size,
            ..FeatureConfig::default()
        },
    )
}

/// The static cost of an experiment's cells: operations per sample of its network, and its
/// schedule's epochs and observations.
fn experiment_cost(e: &ExperimentSpec, run: &Schedule) -> Result<ExperimentCost> {
    let es = e.schedule(run);
    Ok(ExperimentCost {
        name: e.name.clone(),
        macs: e.model_spec(run.dropout)?.flops()? as f64,
        epochs: es.epochs,
        observations: es.observation_epochs().len(),
    })
}

/// Step 2: the cells of `shard` (all without one) of the prepared grid, in grid order, and
/// which of them are still to train.
pub fn plan_cells_of(
    p: &Prepared,
    shard: Option<Shard>,
) -> Result<(Vec<PlannedCell>, Vec<PlannedCell>)> {
    let sch = &p.settings.schedule;
    let exps: Vec<ExperimentCost> = p
        .experiments
        .iter()
        .map(|e| experiment_cost(e, sch))
        .collect::<Result<_>>()?;
    let folds: Vec<(usize, usize, usize)> = p
        .folds
        .iter()
        .map(|f| (f.number, f.train.len(), f.test.len()))
        .collect();
    let cells = plan_cells(&exps, &p.seeds, &folds);
    let mine = shard_cells(cells, shard);
    let mut todo = Vec::new();
    let mut done: HashMap<(usize, u64), Vec<usize>> = HashMap::new();
    for c in &mine {
        let e = &p.experiments[c.experiment];
        let finished = match done.entry((c.experiment, c.key.seed)) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let fp = fingerprint(e, &e.schedule(sch), c.key.seed, &p.settings.list_hash);
                let recs = p
                    .folder
                    .load_cells(&e.name, c.key.seed, &p.folds, &fp, true)?;
                v.insert(recs.into_iter().map(|r| r.fold).collect())
            }
        };
        if !finished.contains(&c.key.fold) {
            todo.push(c.clone());
        }
    }
    Ok((mine, todo))
}

/// Step 3: trains `cells` with `plan`'s workers, writing each finished cell; returns how
/// many were trained. Stops early (with [`Error::Stopped`]) after `stop_after` cells.
pub fn train_cells(
    p: &Prepared,
    cells: &[PlannedCell],
    plan: &ExecutionPlan,
    progress: &Progress,
    stop_after: Option<usize>,
) -> Result<usize> {
    let sch = &p.settings.schedule;
    let labels: Vec<usize> = p.samples.iter().map(|s| s.class.index()).collect();
    let ids = sample_ids(&p.samples);
    let mut inputs: HashMap<(InputKind, usize), Tensor> = HashMap::new();
    for c in cells {
        let e = &p.experiments[c.experiment];
        let (k, size) = (e.input_kind()?, e.input_size());
        if let std::collections::hash_map::Entry::Vacant(v) = inputs.entry((k, size)) {
            let data = feature_cache(&p.cache_dir, size).load(&p.samples, k)?;
            v.insert(Tensor::from_vec(
                data,
                (p.samples.len(), k.channels(), size, size),
                &Device::Cpu,
            )?);
        }
    }
    let configs: Vec<ModelSpec> = p
        .experiments
        .iter()
        .map(|e| e.model_spec(sch.dropout))
        .collect::<Result<_>>()?;
    let schedules: Vec<Schedule> = p.experiments.iter().map(|e| e.schedule(sch)).collect();
    // Longest first: the parallel workers finish together.
    let mut order: Vec<&PlannedCell> = cells.iter().collect();
    if plan.workers > 1 {
        order.sort_by(|a, b| b.cost.total_cmp(&a.cost));
    }
    progress.emit(ProgressEvent::Planned {
        cells: order.len(),
        epochs: sch.epochs,
        workers: plan.workers,
    });
    let queue = Mutex::new(order.into_iter().collect::<VecDeque<_>>());
    let trained = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let workers = plan.workers.max(1);
    let threads_per_cell = plan.threads_per_cell.max(1);
    std::thread::scope(|s| {
        for worker in 0..workers {
            let (queue, trained, stop, first_error) = (&queue, &trained, &stop, &first_error);
            let (inputs, configs, labels, ids) = (&inputs, &configs, &labels, &ids);
            let schedules = &schedules;
            s.spawn(move || {
                let pool = match single_pool(threads_per_cell) {
                    Ok(p) => p,
                    Err(e) => {
                        first_error.lock().unwrap().get_or_insert(e);
                        stop.store(true, Ordering::SeqCst);
                        return;
                    }
                };
                loop {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Some(cell) = queue.lock().unwrap().pop_front() else {
                        break;
                    };
                    let e = &p.experiments[cell.experiment];
                    let f = &p.folds[cell.fold];
                    let seed = cell.key.seed;
                    progress.emit(ProgressEvent::CellStarted {
                        worker,
                        cell: cell.key.clone(),
                        subject: f.subject_id(),
                    });
                    let es = &schedules[cell.experiment];
                    let fp = fingerprint(e, es, seed, &p.settings.list_hash);
                    let fj = FoldJob {
                        experiment: &e.name,
                        fingerprint: &fp,
                        model: configs[cell.experiment],
                        schedule: es,
                        seed,
                        fold: f,
                        x: &inputs[&(e.input_kind().expect("validated"), e.input_size())],
                        labels,
                        ids,
                    };
                    let on_epoch = |ep: usize| {
                        progress.emit(ProgressEvent::Epoch {
                            worker,
                            epoch: ep + 1,
                        })
                    };
                    let res = pool
                        .install(|| train_fold(&fj, &on_epoch))
                        .and_then(|(rec, model)| {
                            let (json, weights) = p.folder.cell_paths(&e.name, seed, f);
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
                                "{:<10} seed {seed} fold {:>2}/{} {:<14} n_test {:>2}  UAR@last {:.3}  {:.1} s",
                                e.name,
                                f.number,
                                p.folds.len(),
                                f.subject_id(),
                                rec.truth.len(),
                                last,
                                rec.seconds
                            );
                            progress.emit(ProgressEvent::CellFinished {
                                worker,
                                cell: cell.key.clone(),
                                line,
                            });
                            let n = trained.fetch_add(1, Ordering::SeqCst) + 1;
                            if stop_after.is_some_and(|k| n >= k) {
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
            });
        }
    });
    progress.emit(ProgressEvent::TrainingDone);
    if let Some(e) = first_error.into_inner().unwrap() {
        return Err(e);
    }
    let trained = trained.into_inner();
    if trained < cells.len() {
        return Err(Error::Stopped(trained));
    }
    Ok(trained)
}

/// What [`train_deployable`] trained.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployRecord {
    /// The experiment.
    pub experiment: ExperimentSpec,
    /// Its schedule in this run.
    pub schedule: Schedule,
    /// The seed.
    pub seed: u64,
    /// Samples trained on (every subject).
    pub samples: usize,
    /// Hash of the sample list (as in `run.json`).
    pub list_hash: String,
    /// The data folder.
    pub data_root: PathBuf,
    /// Mean training loss of every epoch.
    pub train_loss: Vec<f32>,
    /// Wall time (seconds).
    pub seconds: f64,
    /// Source commit and command line.
    pub provenance: Provenance,
}

/// Trains one model of experiment `name` on every sample of the prepared data (no subject
/// held out: the LOSO folds exist to measure; a deployed model uses every subject), with
/// the experiment's schedule and the same seeded initialisation, batch order and dropout
/// as a cell (stream 0). `on_epoch(e)` after each epoch.
pub fn train_deployable(
    p: &Prepared,
    name: &str,
    seed: u64,
    provenance: &Provenance,
    on_epoch: &(dyn Fn(usize) + Sync),
) -> Result<(mer_model::Net, DeployRecord)> {
    let e = p
        .experiments
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| Error::Invalid(format!("unknown experiment `{name}`")))?;
    let sch = e.schedule(&p.settings.schedule);
    let (k, size) = (e.input_kind()?, e.input_size());
    let data = feature_cache(&p.cache_dir, size).load(&p.samples, k)?;
    let x = Tensor::from_vec(
        data,
        (p.samples.len(), k.channels(), size, size),
        &Device::Cpu,
    )?;
    let labels: Vec<usize> = p.samples.iter().map(|s| s.class.index()).collect();
    let ids = sample_ids(&p.samples);
    let all = Fold {
        number: 0,
        dataset: "all".into(),
        subject: "all".into(),
        train: (0..p.samples.len()).collect(),
        test: Vec::new(),
    };
    let job = FoldJob {
        experiment: &e.name,
        fingerprint: "deploy",
        model: e.model_spec(sch.dropout)?,
        schedule: &sch,
        seed,
        fold: &all,
        x: &x,
        labels: &labels,
        ids: &ids,
    };
    let (rec, net) = train_fold(&job, on_epoch)?;
    Ok((
        net,
        DeployRecord {
            experiment: e.clone(),
            schedule: sch,
            seed,
            samples: p.samples.len(),
            list_hash: p.settings.list_hash.clone(),
            data_root: p.root.clone(),
            train_loss: rec.train_loss,
            seconds: rec.seconds,
            provenance: provenance.clone(),
        },
    ))
}

/// Runs the ablation experiments (or one shard of them): see the module documentation.
pub fn run_ablation(opts: &AblationOptions) -> Result<RunOutcome> {
    let p = prepare(opts)?;
    let (mine, todo) = plan_cells_of(&p, opts.shard)?;
    let reused = mine.len() - todo.len();
    if let Some(s) = opts.shard {
        tracing::info!(
            "shard {s}: {} of the grid's cells, {reused} finished, {} to train",
            mine.len(),
            todo.len()
        );
    } else if reused > 0 {
        tracing::info!("{reused} cells already finished, {} to train", todo.len());
    }
    let sch = p.settings.schedule.clone();
    let plan = match p.measured_plan.clone() {
        Some(plan) => plan,
        None => {
            let models: Vec<ModelSpec> = p
                .experiments
                .iter()
                .map(|e| e.model_spec(sch.dropout))
                .collect::<Result<_>>()?;
            if todo.is_empty() {
                ExecutionPlan {
                    mode: "none".into(),
                    workers: 0,
                    threads_per_cell: 0,
                    folds_throughput: None,
                    serial_throughput: None,
                }
            } else {
                plan_execution(&models, opts, todo.len(), false, sch.batch_size)?.0
            }
        }
    };
    eprintln!(
        "schedule `{}`: {} epochs, batch {}, Adam lr {} x{} every {} epochs, observed every {} epochs (+ the last); {} seed(s); {} cells to train, {} mode, {} worker(s) x {} thread(s)",
        sch.name, sch.epochs, sch.batch_size, sch.lr, sch.lr_decay, sch.lr_step, sch.eval_every,
        p.seeds.len(), todo.len(), plan.mode, plan.workers, plan.threads_per_cell
    );
    // This invocation's record: written now (so a killed shard's grid still counts), and
    // again with its timings at the end.
    let machine = crate::report::Machine::detect();
    let started_unix = now_unix().saturating_sub(p.started.elapsed().as_secs());
    let inv_path = p
        .folder
        .new_invocation_path(started_unix, &machine.hostname);
    let mut record = InvocationRecord {
        commit: opts.provenance.commit.clone(),
        command: opts.provenance.command.clone(),
        hostname: machine.hostname.clone(),
        grid: p.grid(),
        shard: opts.shard.map(|s| s.to_string()),
        shard_cells: mine.len(),
        plan: plan.clone(),
        timing: None,
        started_unix,
    };
    write_json(&inv_path, &record)?;
    let t_train = Instant::now();
    let trained = train_cells(&p, &todo, &plan, &opts.progress, opts.stop_after_cells);
    let timing = Timing {
        started_unix,
        wall_secs: p.started.elapsed().as_secs_f64(),
        feature_secs: p.feature_secs,
        training_secs: t_train.elapsed().as_secs_f64(),
        trained_cells: match &trained {
            Ok(n) | Err(Error::Stopped(n)) => *n,
            // Failed: what the cells on disk say (the others may have finished).
            Err(_) => plan_cells_of(&p, opts.shard)
                .map_or(0, |(_, left)| todo.len().saturating_sub(left.len())),
        },
        reused_cells: reused,
    };
    record.timing = Some(timing);
    write_json(&inv_path, &record)?;
    let trained = trained?;

    // The report over every cell of the run folder; a shard leaves it to `report`.
    let report = if opts.shard.is_none() {
        Some(write_report(&p.folder, &opts.provenance)?)
    } else {
        None
    };
    Ok(RunOutcome {
        run_dir: p.folder.dir.clone(),
        report,
        settings: p.settings.clone(),
        shard_cells: mine.len(),
        trained_cells: trained,
        reused_cells: reused,
        wall_secs: p.started.elapsed().as_secs_f64(),
    })
}

/// Records an invocation that trains nothing but hands the grid to others (a Slurm
/// submission): the report then knows every cell the run is to have, even before any
/// task ran. Returns the number of cells in the grid.
pub fn record_submission(p: &Prepared, opts: &AblationOptions, mode: &str) -> Result<usize> {
    let (all, todo) = plan_cells_of(p, None)?;
    let machine = crate::report::Machine::detect();
    let started_unix = now_unix().saturating_sub(p.started.elapsed().as_secs());
    let record = InvocationRecord {
        commit: opts.provenance.commit.clone(),
        command: opts.provenance.command.clone(),
        hostname: machine.hostname.clone(),
        grid: p.grid(),
        shard: None,
        shard_cells: 0,
        plan: ExecutionPlan {
            mode: mode.into(),
            workers: 0,
            threads_per_cell: 0,
            folds_throughput: None,
            serial_throughput: None,
        },
        timing: Some(Timing {
            started_unix,
            wall_secs: p.started.elapsed().as_secs_f64(),
            feature_secs: p.feature_secs,
            training_secs: 0.0,
            trained_cells: 0,
            reused_cells: all.len() - todo.len(),
        }),
        started_unix,
    };
    write_json(
        &p.folder
            .new_invocation_path(started_unix, &machine.hostname),
        &record,
    )?;
    Ok(all.len())
}
