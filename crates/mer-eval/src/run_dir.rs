//! The run folder: what a run is (its settings, fixed when the folder is created), its cells
//! (one file per finished (experiment, seed, fold)), and the record of every invocation
//! that worked on it. The runner, the report and the attention analysis all read run
//! folders through this module.
//!
//! Layout of `results/<run>/`:
//! - `run.json` ([`RunSettings`]): schedule as resolved, the data list's hash, the budget
//!   and sizing when asked for, the report's tables. Created once, exclusively (the first
//!   invocation wins; the others read it and refuse if a setting of theirs differs, naming
//!   it), never rewritten.
//! - `samples.csv`: the sample list (the same bytes from every invocation).
//! - `cells/<experiment>/seed-<S>/fold-NN-<dataset>-<subject>.json` (+ `.safetensors`, the
//!   final weights): one per finished cell, written atomically, weights first.
//! - `invocations/<start>-<host>-<pid>.json` ([`InvocationRecord`]): one per invocation,
//!   written only by that invocation: the cells it was asked for (the whole grid, not only
//!   its shard), its shard, how it shared the cores, its timings. The report merges them
//!   into `manifest.json`; the expected cells of a run are the union of their grids.
//!
//! Concurrent invocations (shards on several machines sharing the folder) never write the
//! same file, except the cells themselves and `samples.csv`, whose bytes are a function of
//! the settings, and the report files, which are rewritten whole.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use mer_data::SampleMeta;
use serde::{Deserialize, Serialize};

use crate::config::{ExperimentSpec, Schedule, TableSpec};
use crate::io::{fnv1a64_hex, read_json, write_json};
use crate::loso::{loso_folds, Fold};
use crate::train::FoldRecord;
use crate::{Error, Result};

/// Format version of `run.json` (2: cells keyed by seed, settings immutable).
pub const RUN_FORMAT: u32 = 2;

/// Version of the training procedure's random streams, part of every fingerprint: bumped
/// when a change makes the same configuration train differently (2: seeded dropout; 3: the
/// weight-gradient sums in a fixed number of chunks, whatever the thread count).
pub const TRAINING_VERSION: u32 = 3;

/// A training-speed measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeedRecord {
    /// The model (`ta/3ch`).
    pub model: String,
    /// Samples per second of one worker.
    pub samples_per_sec: f64,
}

/// How a budgeted schedule got its epochs (`--budget`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sizing {
    /// The budget (seconds).
    pub budget_secs: f64,
    /// Seconds left for training when the schedule was sized.
    pub training_budget_secs: f64,
    /// Predicted training time (seconds) of the chosen epochs.
    pub predicted_training_secs: f64,
    /// Concurrent workers assumed.
    pub workers: usize,
    /// Per-model speeds (samples/s per worker) measured at the start.
    pub speeds: Vec<SpeedRecord>,
}

/// `run.json`: the settings every invocation on a run folder shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    /// Format version ([`RUN_FORMAT`]).
    pub version: u32,
    /// The run's name.
    pub run: String,
    /// The resolved schedule.
    pub schedule: Schedule,
    /// The budget that sized the epochs (`--budget`), if any.
    pub sizing: Option<Sizing>,
    /// The experiments file's seed (the default seed list starts there).
    pub base_seed: u64,
    /// The benchmark (`offtanet`, `megc2019`): which databases and rules.
    #[serde(default = "default_benchmark")]
    pub benchmark: String,
    /// SMIC's apex rule (`middle`, `spotted`) in a `megc2019` run (the sample list, and so
    /// its hash, depends on it).
    #[serde(default = "default_smic_apex")]
    pub smic_apex: String,
    /// `synthetic` or `root`.
    pub data_kind: String,
    /// The data folder (of the invocation that created the run).
    pub data_root: PathBuf,
    /// The feature cache folder (of the invocation that created the run).
    pub cache_dir: PathBuf,
    /// Hash of the sample list (`samples.csv`).
    pub list_hash: String,
    /// Number of samples.
    pub samples: usize,
    /// Number of LOSO folds.
    pub folds: usize,
    /// The experiments file.
    pub experiments_file: PathBuf,
    /// The report's tables.
    pub tables: Vec<TableSpec>,
    /// Creation time (seconds since the Unix epoch).
    pub created_unix: u64,
}

impl RunSettings {
    /// The settings an invocation must share with the run folder, by name, as text.
    pub fn compared(&self) -> Vec<(&'static str, String)> {
        let s = &self.schedule;
        vec![
            ("schedule", s.name.clone()),
            (
                "budget",
                self.sizing
                    .as_ref()
                    .map_or("none (fixed epochs)".into(), |z| {
                        format!("{} s", z.budget_secs)
                    }),
            ),
            ("epochs", s.epochs.to_string()),
            ("batch_size", s.batch_size.to_string()),
            ("lr", s.lr.to_string()),
            ("lr_decay", s.lr_decay.to_string()),
            ("lr_step", s.lr_step.to_string()),
            ("eval_every", s.eval_every.to_string()),
            ("dropout", s.dropout.to_string()),
            ("seed", self.base_seed.to_string()),
            ("benchmark", self.benchmark.clone()),
            (
                "data list",
                format!("hash {} ({} samples)", self.list_hash, self.samples),
            ),
        ]
    }

    /// Checks that `wanted` (what an invocation would create) agrees with these settings.
    /// `epochs_given`: whether the invocation fixed the epochs itself (with a budget the
    /// run folder's sized epochs are taken as they are).
    pub fn check(&self, wanted: &RunSettings, epochs_given: bool, run_dir: &Path) -> Result<()> {
        for ((name, have), (_, want)) in self.compared().into_iter().zip(wanted.compared()) {
            let sized = self.sizing.is_some() && wanted.sizing.is_some();
            if name == "epochs" && sized && !epochs_given {
                continue;
            }
            if have != want {
                return Err(Error::RunMismatch {
                    path: run_dir.to_path_buf(),
                    message: format!(
                        "setting `{name}` differs: the run folder has {have}, this invocation {want}; \
use another --run name or remove the folder"
                    ),
                });
            }
        }
        Ok(())
    }
}

fn default_smic_apex() -> String {
    "middle".into()
}

fn default_benchmark() -> String {
    "offtanet".into()
}

/// One cell of the grid: an experiment, a seed, a fold (1-based fold number).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CellKey {
    /// The experiment's name.
    pub experiment: String,
    /// The seed.
    pub seed: u64,
    /// The fold's number (1-based).
    pub fold: usize,
}

/// The grid an invocation was asked for: experiments (with their definitions) and seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grid {
    /// The experiments, by name.
    pub experiments: BTreeMap<String, ExperimentSpec>,
    /// The seeds, in the order given.
    pub seeds: Vec<u64>,
}

/// How an invocation shared the cores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionPlan {
    /// `folds` (one cell per worker, one thread each) or `serial` (one cell on all threads).
    pub mode: String,
    /// Concurrent cells.
    pub workers: usize,
    /// Threads per cell.
    pub threads_per_cell: usize,
    /// Measured throughput of `ta` (samples/s, all workers) one cell per core, if measured.
    pub folds_throughput: Option<f64>,
    /// Measured throughput of `ta` (samples/s) of one cell on all cores, if measured.
    pub serial_throughput: Option<f64>,
}

/// Timings of one invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Start (seconds since the Unix epoch).
    pub started_unix: u64,
    /// Wall time up to the end of training (seconds).
    pub wall_secs: f64,
    /// Feature extraction (seconds, including cache checks).
    pub feature_secs: f64,
    /// Training (seconds).
    pub training_secs: f64,
    /// Cells trained.
    pub trained_cells: usize,
    /// Cells of its shard found finished.
    pub reused_cells: usize,
}

/// `invocations/<id>.json`: one invocation of the runner on a run folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationRecord {
    /// Source commit.
    pub commit: String,
    /// Command line.
    pub command: String,
    /// Host name.
    pub hostname: String,
    /// The cells asked for (the whole grid, whatever the shard).
    pub grid: Grid,
    /// `I/N` when the invocation ran one shard.
    pub shard: Option<String>,
    /// Cells of this invocation's shard.
    pub shard_cells: usize,
    /// How it shared the cores.
    pub plan: ExecutionPlan,
    /// Its timings, once it finished (absent while it runs or when it was killed).
    pub timing: Option<Timing>,
    /// Start (seconds since the Unix epoch).
    pub started_unix: u64,
}

/// A run folder.
#[derive(Debug, Clone)]
pub struct RunFolder {
    /// The folder.
    pub dir: PathBuf,
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The fingerprint of an experiment's cells of one seed: a cell file is used only if it
/// matches (the same definition, schedule, seed, data list and training procedure). `s` is
/// the experiment's own schedule ([`ExperimentSpec::schedule`]). An Off-TANet experiment
/// without settings of its own keeps the fingerprint it had before baselines existed.
pub fn fingerprint(e: &ExperimentSpec, s: &Schedule, seed: u64, list_hash: &str) -> String {
    let mut text = format!(
        "training={TRAINING_VERSION};variant={};input={};schedule={};seed={seed};list={list_hash}",
        e.variant,
        e.input,
        serde_json::to_string(s).unwrap_or_default()
    );
    if e.model.is_some() || e.size.is_some() || !e.schedules.is_empty() {
        text += &format!(";definition={}", e.definition());
    }
    fnv1a64_hex(text.as_bytes())
}

impl RunFolder {
    /// The run folder `results_dir/name`; the name must be a plain folder name.
    pub fn new(results_dir: &Path, name: &str) -> Result<Self> {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(Error::Invalid(format!(
                "run name `{name}`: expected a plain folder name"
            )));
        }
        Ok(RunFolder {
            dir: results_dir.join(name),
        })
    }

    /// An existing run folder (one with a `run.json`).
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.join("run.json").is_file() {
            return Err(Error::Incomplete(format!(
                "{}: not a run folder (no run.json); start it with `cargo xtask ablation`",
                dir.display()
            )));
        }
        Ok(RunFolder {
            dir: dir.to_path_buf(),
        })
    }

    fn settings_path(&self) -> PathBuf {
        self.dir.join("run.json")
    }

    /// Reads `run.json`.
    pub fn settings(&self) -> Result<RunSettings> {
        let path = self.settings_path();
        let v: serde_json::Value = read_json(&path)?;
        let version = v.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
        if version != RUN_FORMAT as u64 {
            return Err(Error::RunMismatch {
                path: self.dir.clone(),
                message: format!(
                    "run.json has format {version}, this version reads {RUN_FORMAT} (cells keyed by seed); \
use another --run name or remove the folder"
                ),
            });
        }
        serde_json::from_value(v).map_err(|e| Error::json(&path, e))
    }

    /// Creates `run.json` with `wanted` unless it exists (atomically and exclusively: of
    /// concurrent creators exactly one wins, and nobody ever reads a partial file); then
    /// checks the folder's settings against `wanted`. Returns the folder's settings and
    /// whether this call created them.
    pub fn create_or_check(
        &self,
        wanted: &RunSettings,
        epochs_given: bool,
    ) -> Result<(RunSettings, bool)> {
        let (have, created) = self.create(wanted)?;
        have.check(wanted, epochs_given, &self.dir)?;
        Ok((have, created))
    }

    /// Creates `run.json` with `wanted` unless it exists, exclusively (see
    /// [`RunFolder::create_or_check`]), without checking; returns the folder's settings and
    /// whether this call created them.
    pub fn create(&self, wanted: &RunSettings) -> Result<(RunSettings, bool)> {
        let path = self.settings_path();
        let created = if path.exists() {
            false
        } else {
            let tmp = mer_common::fs::temp_beside(&path);
            write_json(&tmp, wanted)?;
            let r = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            match r {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                Err(e) => return Err(Error::io(&path, e)),
            }
        };
        Ok((self.settings()?, created))
    }

    /// `samples.csv`.
    pub fn samples_path(&self) -> PathBuf {
        self.dir.join("samples.csv")
    }

    /// The sample list and its LOSO folds, checked against the settings' list hash.
    pub fn samples(&self) -> Result<(Vec<SampleMeta>, Vec<Fold>)> {
        let path = self.samples_path();
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let hash = fnv1a64_hex(text.as_bytes());
        let want = self.settings()?.list_hash;
        if hash != want {
            return Err(Error::RunMismatch {
                path: self.dir.clone(),
                message: format!(
                    "{} has hash {hash}, run.json says {want}: the list was replaced; rerun `cargo xtask ablation` on this run to restore it",
                    path.display()
                ),
            });
        }
        let samples = mer_data::list::parse_list(&text, &path)?;
        let folds = loso_folds(&samples);
        Ok((samples, folds))
    }

    /// The files of a cell: `(json, weights)`.
    pub fn cell_paths(&self, experiment: &str, seed: u64, fold: &Fold) -> (PathBuf, PathBuf) {
        let d = self
            .dir
            .join("cells")
            .join(experiment)
            .join(format!("seed-{seed}"));
        (
            d.join(format!("{}.json", fold.stem())),
            d.join(format!("{}.safetensors", fold.stem())),
        )
    }

    /// The finished cells of an experiment and seed (in fold order). A cell file of another
    /// fingerprint is an error when `strict` (it would be overwritten otherwise), else skipped.
    pub fn load_cells(
        &self,
        experiment: &str,
        seed: u64,
        folds: &[Fold],
        fingerprint: &str,
        strict: bool,
    ) -> Result<Vec<FoldRecord>> {
        let mut out = Vec::new();
        for f in folds {
            let (json, _) = self.cell_paths(experiment, seed, f);
            if !json.exists() {
                continue;
            }
            let r: FoldRecord = read_json(&json)?;
            if r.fingerprint != fingerprint {
                if strict {
                    return Err(Error::RunMismatch {
                        path: self.dir.clone(),
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

    fn invocations_dir(&self) -> PathBuf {
        self.dir.join("invocations")
    }

    /// A fresh invocation file name: `<start>-<host>-<pid>.json`.
    pub fn new_invocation_path(&self, started_unix: u64, hostname: &str) -> PathBuf {
        let host = crate::io::file_safe(if hostname.is_empty() {
            "host"
        } else {
            hostname
        });
        self.invocations_dir()
            .join(format!("{started_unix}-{host}-{}.json", std::process::id()))
    }

    /// Every invocation record, oldest first (by start, then file name).
    pub fn invocations(&self) -> Result<Vec<InvocationRecord>> {
        let dir = self.invocations_dir();
        let mut paths: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().is_some_and(|e| e == "json")
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        paths.sort();
        let mut out: Vec<InvocationRecord> =
            paths.iter().map(|p| read_json(p)).collect::<Result<_>>()?;
        out.sort_by_key(|r| r.started_unix);
        Ok(out)
    }

    /// The experiment `name` of the expected grid with its seeds, or an error naming the
    /// run and the experiments it has.
    pub fn experiment(&self, name: &str) -> Result<(ExperimentSpec, Vec<u64>)> {
        let expected = self.expected()?;
        expected
            .iter()
            .find(|(e, _)| e.name == name)
            .cloned()
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "run {} has no experiment `{name}` (it has {})",
                    self.dir.display(),
                    expected
                        .iter()
                        .map(|(e, _)| e.name.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    /// The expected cells' grid: for every experiment (definition checked consistent), the
    /// seeds any invocation asked for it, in first-asked order.
    pub fn expected(&self) -> Result<Vec<(ExperimentSpec, Vec<u64>)>> {
        merge_grids(&self.invocations()?, &self.dir)
    }
}

/// The union of invocations' grids: every experiment with the seeds asked for it. An
/// experiment defined differently by two invocations is an error naming it.
pub fn merge_grids(
    invocations: &[InvocationRecord],
    run_dir: &Path,
) -> Result<Vec<(ExperimentSpec, Vec<u64>)>> {
    let mut out: Vec<(ExperimentSpec, Vec<u64>)> = Vec::new();
    for inv in invocations {
        for (name, spec) in &inv.grid.experiments {
            let entry = match out.iter_mut().find(|(e, _)| &e.name == name) {
                Some(e) => e,
                None => {
                    out.push((spec.clone(), Vec::new()));
                    out.last_mut().expect("just pushed")
                }
            };
            check_same_experiment(&entry.0, spec, run_dir)?;
            for s in &inv.grid.seeds {
                if !entry.1.contains(s) {
                    entry.1.push(*s);
                }
            }
        }
    }
    Ok(out)
}

/// Refuses two definitions of one experiment name in a run.
pub fn check_same_experiment(a: &ExperimentSpec, b: &ExperimentSpec, run_dir: &Path) -> Result<()> {
    if a.definition() != b.definition() {
        return Err(Error::RunMismatch {
            path: run_dir.to_path_buf(),
            message: format!(
                "setting `experiment {}` differs: the run folder has {} on {}, this invocation {} on {}; \
use another --run name or remove the folder",
                a.name,
                a.model_label(),
                a.input,
                b.model_label(),
                b.input
            ),
        });
    }
    Ok(())
}

/// The distinct seeds of a grid's experiments.
pub fn all_seeds(expected: &[(ExperimentSpec, Vec<u64>)]) -> BTreeSet<u64> {
    expected
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(epochs: usize, hash: &str) -> RunSettings {
        RunSettings {
            version: RUN_FORMAT,
            run: "r".into(),
            schedule: Schedule {
                name: "tiny".into(),
                epochs,
                batch_size: 4,
                lr: 1e-3,
                lr_decay: 0.3,
                lr_step: 1,
                eval_every: 1,
                dropout: 0.5,
                optimizer: Default::default(),
                epochs_given: false,
            },
            sizing: None,
            base_seed: 0,
            benchmark: "offtanet".into(),
            smic_apex: "middle".into(),
            data_kind: "synthetic".into(),
            data_root: "/d".into(),
            cache_dir: "/c".into(),
            list_hash: hash.into(),
            samples: 12,
            folds: 3,
            experiments_file: "e.toml".into(),
            tables: Vec::new(),
            created_unix: 1,
        }
    }

    #[test]
    fn settings_are_created_once_and_a_differing_setting_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = RunFolder::new(dir.path(), "r").unwrap();
        let (s, created) = f.create_or_check(&settings(2, "abc"), true).unwrap();
        assert!(created);
        assert_eq!(s.schedule.epochs, 2);
        // The same settings again: accepted, not created, the file untouched.
        let mut later = settings(2, "abc");
        later.created_unix = 99;
        let (s, created) = f.create_or_check(&later, true).unwrap();
        assert!(!created);
        assert_eq!(s.created_unix, 1);
        let e = f.create_or_check(&settings(5, "abc"), true).unwrap_err();
        assert!(
            e.to_string()
                .contains("setting `epochs` differs: the run folder has 2, this invocation 5"),
            "{e}"
        );
        let e = f.create_or_check(&settings(2, "def"), true).unwrap_err();
        assert!(e.to_string().contains("setting `data list` differs"), "{e}");
        let mut other = settings(2, "abc");
        other.schedule.lr = 0.1;
        let e = f.create_or_check(&other, true).unwrap_err();
        assert!(e.to_string().contains("setting `lr` differs"), "{e}");
        // Only run.json in the folder: no temporary left behind.
        let names: Vec<_> = std::fs::read_dir(&f.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("run.json")]);
    }

    #[test]
    fn concurrent_creators_agree_on_one_settings_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = RunFolder::new(dir.path(), "r").unwrap();
        std::fs::create_dir_all(&f.dir).unwrap();
        let created: Vec<bool> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|i| {
                    let f = f.clone();
                    s.spawn(move || {
                        let mut w = settings(2, "abc");
                        w.created_unix = i;
                        f.create_or_check(&w, true).unwrap().1
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(created.iter().filter(|c| **c).count(), 1);
    }

    #[test]
    fn a_budgeted_run_takes_the_folders_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let f = RunFolder::new(dir.path(), "r").unwrap();
        let sized = |epochs, budget| {
            let mut s = settings(epochs, "abc");
            s.sizing = Some(Sizing {
                budget_secs: budget,
                training_budget_secs: 1.0,
                predicted_training_secs: 1.0,
                workers: 1,
                speeds: Vec::new(),
            });
            s
        };
        f.create_or_check(&sized(4, 30.0), false).unwrap();
        // Another shard measured another speed (another epoch count): the folder's wins.
        let (s, _) = f.create_or_check(&sized(6, 30.0), false).unwrap();
        assert_eq!(s.schedule.epochs, 4);
        let e = f.create_or_check(&sized(4, 60.0), false).unwrap_err();
        assert!(e.to_string().contains("setting `budget` differs"), "{e}");
        let e = f.create_or_check(&settings(4, "abc"), true).unwrap_err();
        assert!(e.to_string().contains("setting `budget` differs"), "{e}");
    }

    #[test]
    fn grids_merge_and_conflicting_definitions_are_refused() {
        let spec = |name: &str, variant: &str| ExperimentSpec {
            name: name.into(),
            model: None,
            variant: variant.into(),
            input: "flow3".into(),
            size: None,
            schedules: Default::default(),
            description: String::new(),
        };
        let inv = |exps: &[ExperimentSpec], seeds: &[u64]| InvocationRecord {
            commit: String::new(),
            command: String::new(),
            hostname: String::new(),
            grid: Grid {
                experiments: exps.iter().map(|e| (e.name.clone(), e.clone())).collect(),
                seeds: seeds.to_vec(),
            },
            shard: None,
            shard_cells: 0,
            plan: ExecutionPlan {
                mode: "serial".into(),
                workers: 1,
                threads_per_cell: 1,
                folds_throughput: None,
                serial_throughput: None,
            },
            timing: None,
            started_unix: 0,
        };
        let g = merge_grids(
            &[
                inv(&[spec("ta", "ta")], &[0, 1]),
                inv(&[spec("res", "res"), spec("ta", "ta")], &[0, 2]),
            ],
            Path::new("r"),
        )
        .unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(
            (g[0].0.name.as_str(), g[0].1.clone()),
            ("ta", vec![0, 1, 2])
        );
        assert_eq!((g[1].0.name.as_str(), g[1].1.clone()), ("res", vec![0, 2]));
        let e = merge_grids(
            &[
                inv(&[spec("ta", "ta")], &[0]),
                inv(&[spec("ta", "res")], &[0]),
            ],
            Path::new("r"),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("setting `experiment ta` differs"),
            "{e}"
        );
    }
}
