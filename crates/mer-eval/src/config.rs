//! Experiments as data: the model variants, inputs and schedules of the paper's ablations are
//! defined in a TOML file (`experiments/paper.toml` at the workspace root), not in code.
//!
//! ```toml
//! seed = 0
//! [schedules.paper]            # the reference's schedule
//! epochs = 201
//! batch_size = 64
//! lr = 1e-3
//! lr_decay = 0.3
//! lr_step = 60
//! eval_every = 20
//!
//! [[experiments]]
//! name = "ta"
//! variant = "ta"               # res | cbam | sa | bot | ta | all-ta
//! input = "flow3"              # flow3 | flow-no-strain | raw-images
//!
//! [[tables]]
//! id = "table4"
//! title = "Table 4"
//! rows = [{ experiment = "ta", label = "Off-TANet (Ours)", paper_uar = 0.7315, paper_uf1 = 0.7242 }]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mer_data::InputKind;
use mer_model::{ModelConfig, Variant};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A whole experiments file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentsFile {
    /// Seed of weight initialisation and batch order.
    #[serde(default)]
    pub seed: u64,
    /// Named schedules (`paper`, `quick`, ...).
    pub schedules: BTreeMap<String, ScheduleSpec>,
    /// The experiments, in report order.
    pub experiments: Vec<ExperimentSpec>,
    /// The tables of the report, in order.
    #[serde(default)]
    pub tables: Vec<TableSpec>,
}

/// A training schedule as written in the file; missing sizes are derived (see
/// [`ScheduleSpec::resolve`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// What the schedule is for.
    #[serde(default)]
    pub description: String,
    /// Training epochs; absent: sized so that the run fits `budget_secs` from the training
    /// speed measured at the start of the run.
    pub epochs: Option<usize>,
    /// Wall-time budget of the whole run (seconds) when `epochs` is absent.
    pub budget_secs: Option<f64>,
    /// Lower bound of the sized epochs.
    #[serde(default = "default_min_epochs")]
    pub min_epochs: usize,
    /// Upper bound of the sized epochs.
    #[serde(default = "default_max_epochs")]
    pub max_epochs: usize,
    /// Mini-batch size (reshuffled every epoch; the last batch may be smaller).
    pub batch_size: usize,
    /// Adam's initial learning rate.
    pub lr: f64,
    /// Step decay factor of the learning rate.
    pub lr_decay: f64,
    /// Epochs between learning-rate decays; absent: `lr_step_fraction` of the epochs.
    pub lr_step: Option<usize>,
    /// The decay interval as a fraction of the epochs when `lr_step` is absent (default
    /// 60/201, the reference's proportion).
    pub lr_step_fraction: Option<f64>,
    /// Epochs between observations (test-fold evaluations); absent: about 10 intervals.
    /// The last epoch is always observed.
    pub eval_every: Option<usize>,
    /// Dropout of the dense layers (default 0.5, the reference's); its masks are seeded
    /// like everything else in training (see `OffTaNet::seed_dropout`).
    pub dropout: Option<f32>,
}

fn default_min_epochs() -> usize {
    2
}
fn default_max_epochs() -> usize {
    201
}

/// A resolved schedule: every size known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// The schedule's name in the experiments file.
    pub name: String,
    /// Training epochs (0-based epochs `0..epochs`).
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Initial learning rate.
    pub lr: f64,
    /// Step decay factor.
    pub lr_decay: f64,
    /// Epochs between decays.
    pub lr_step: usize,
    /// Epochs between observations.
    pub eval_every: usize,
    /// Dropout of the dense layers.
    pub dropout: f32,
}

impl ScheduleSpec {
    /// The schedule with `epochs` epochs (the file's `epochs`, an override, or the sized
    /// number: the caller decides).
    pub fn resolve(&self, name: &str, epochs: usize) -> Schedule {
        let epochs = epochs.max(1);
        Schedule {
            name: name.to_string(),
            epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            lr_decay: self.lr_decay,
            lr_step: self.lr_step.unwrap_or_else(|| {
                let f = self.lr_step_fraction.unwrap_or(60.0 / 201.0);
                ((epochs as f64 * f).round() as usize).max(1)
            }),
            eval_every: self
                .eval_every
                .unwrap_or_else(|| (epochs - 1).div_ceil(10).max(1)),
            dropout: self.dropout.unwrap_or(0.5),
        }
    }

    fn validate(&self, name: &str) -> std::result::Result<(), String> {
        let e = |m: String| Err(format!("schedule `{name}`: {m}"));
        if self.batch_size == 0 {
            return e("batch_size must be at least 1".into());
        }
        if !(self.lr > 0.0) || !(self.lr_decay > 0.0) {
            return e("lr and lr_decay must be positive".into());
        }
        if self.epochs.is_none() && self.budget_secs.is_none_or(|b| !(b > 0.0)) {
            return e("either `epochs` or a positive `budget_secs` is needed".into());
        }
        if self.epochs == Some(0) || self.lr_step == Some(0) || self.eval_every == Some(0) {
            return e("epochs, lr_step and eval_every must be at least 1".into());
        }
        if self.lr_step_fraction.is_some_and(|f| !(f > 0.0)) {
            return e("lr_step_fraction must be positive".into());
        }
        if self.min_epochs == 0 || self.min_epochs > self.max_epochs {
            return e(format!(
                "min_epochs {} / max_epochs {} out of order",
                self.min_epochs, self.max_epochs
            ));
        }
        if let Some(p) = self.dropout {
            if !(0.0..1.0).contains(&p) {
                return e(format!("dropout {p} is not in [0, 1)"));
            }
        }
        Ok(())
    }
}

impl Schedule {
    /// The learning rate of `epoch`: `lr * lr_decay^(epoch / lr_step)`.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        self.lr * self.lr_decay.powi((epoch / self.lr_step) as i32)
    }

    /// The observation epochs: 0, `eval_every`, ... and always the last epoch.
    pub fn observation_epochs(&self) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.epochs).step_by(self.eval_every).collect();
        if v.last() != Some(&(self.epochs - 1)) {
            v.push(self.epochs - 1);
        }
        v
    }

    /// The epoch of the honest protocol, fixed in advance: the last.
    pub fn honest_epoch(&self) -> usize {
        self.epochs - 1
    }
}

/// One experiment: a model variant on an input kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// Unique name (used in file names and `--only`).
    pub name: String,
    /// Model variant: `res`, `cbam`, `sa`, `bot`, `ta`, `all-ta`.
    pub variant: String,
    /// Input kind: `flow3`, `flow-no-strain`, `raw-images`.
    pub input: String,
    /// What the experiment is.
    #[serde(default)]
    pub description: String,
}

impl ExperimentSpec {
    /// The parsed variant.
    pub fn variant(&self) -> Result<Variant> {
        Ok(self.variant.parse::<Variant>()?)
    }
    /// The parsed input kind.
    pub fn input_kind(&self) -> Result<InputKind> {
        self.input.parse::<InputKind>().map_err(Error::Invalid)
    }
    /// The model configuration (input channels from the input kind).
    pub fn model_config(&self, dropout: f32) -> Result<ModelConfig> {
        Ok(ModelConfig::new(self.variant()?)
            .with_in_channels(self.input_kind()?.channels())
            .with_dropout(dropout))
    }
}

/// A table of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// Identifier (`table3`).
    pub id: String,
    /// Caption.
    pub title: String,
    /// Rows in order.
    pub rows: Vec<TableRow>,
}

/// A row of a report table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableRow {
    /// The experiment's name.
    pub experiment: String,
    /// The row's label as in the paper.
    pub label: String,
    /// The paper's UAR, shown beside ours.
    pub paper_uar: Option<f64>,
    /// The paper's UF1.
    pub paper_uf1: Option<f64>,
}

impl ExperimentsFile {
    /// Parses and checks a file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let err = |message: String| Error::Config {
            path: path.to_path_buf(),
            message,
        };
        let f: ExperimentsFile = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        f.validate().map_err(err)?;
        Ok(f)
    }

    /// Reads and checks a file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.experiments.is_empty() {
            return Err("no [[experiments]]".into());
        }
        for (name, s) in &self.schedules {
            s.validate(name)?;
        }
        let mut seen = std::collections::HashSet::new();
        for e in &self.experiments {
            if e.name.is_empty()
                || !e
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(format!(
                    "experiment name `{}`: use letters, digits, `-` and `_`",
                    e.name
                ));
            }
            if !seen.insert(e.name.as_str()) {
                return Err(format!("experiment `{}` defined twice", e.name));
            }
            e.variant()
                .map_err(|x| format!("experiment `{}`: {x}", e.name))?;
            e.input_kind()
                .map_err(|x| format!("experiment `{}`: {x}", e.name))?;
        }
        for t in &self.tables {
            for r in &t.rows {
                if !seen.contains(r.experiment.as_str()) {
                    return Err(format!(
                        "table `{}`: unknown experiment `{}`",
                        t.id, r.experiment
                    ));
                }
            }
        }
        Ok(())
    }

    /// The schedule spec named `name`.
    pub fn schedule(&self, name: &str, path: &Path) -> Result<&ScheduleSpec> {
        self.schedules.get(name).ok_or_else(|| Error::Config {
            path: path.to_path_buf(),
            message: format!(
                "no schedule `{name}`; defined: {}",
                self.schedules
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }

    /// The experiments named in `only` (all when empty), in file order.
    pub fn select(&self, only: &[String]) -> Result<Vec<ExperimentSpec>> {
        for o in only {
            if !self.experiments.iter().any(|e| &e.name == o) {
                return Err(Error::Invalid(format!(
                    "unknown experiment `{o}`; defined: {}",
                    self.experiments
                        .iter()
                        .map(|e| e.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Ok(self
            .experiments
            .iter()
            .filter(|e| only.is_empty() || only.contains(&e.name))
            .cloned()
            .collect())
    }
}

/// `experiments/paper.toml` under a workspace root.
pub fn default_experiments_file(workspace_root: &Path) -> PathBuf {
    workspace_root.join("experiments").join("paper.toml")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
seed = 3
[schedules.paper]
epochs = 201
batch_size = 64
lr = 1e-3
lr_decay = 0.3
lr_step = 60
eval_every = 20
[schedules.quick]
budget_secs = 600
batch_size = 16
lr = 1e-3
lr_decay = 0.3
[[experiments]]
name = "ta"
variant = "ta"
input = "flow3"
[[experiments]]
name = "no-flow"
variant = "ta"
input = "raw-images"
[[tables]]
id = "t"
title = "T"
rows = [{ experiment = "ta", label = "Off-TANet", paper_uar = 0.7315, paper_uf1 = 0.7242 }]
"#;

    #[test]
    fn parses_and_resolves_schedules() {
        let f = ExperimentsFile::parse(TEXT, Path::new("x.toml")).unwrap();
        assert_eq!(f.seed, 3);
        let spec = f.schedule("paper", Path::new("x")).unwrap();
        let paper = spec.resolve("paper", spec.epochs.unwrap());
        assert_eq!(
            paper.observation_epochs(),
            (0..=200).step_by(20).collect::<Vec<_>>()
        );
        assert_eq!(paper.honest_epoch(), 200);
        assert_eq!((paper.lr_at(59), paper.lr_at(60)), (1e-3, 1e-3 * 0.3));
        assert!((paper.lr_at(180) - 2.7e-5).abs() < 1e-18);
        assert_eq!(paper.dropout, 0.5);
        let quick = f
            .schedule("quick", Path::new("x"))
            .unwrap()
            .resolve("quick", 12);
        assert_eq!((quick.epochs, quick.lr_step, quick.eval_every), (12, 4, 2));
        assert_eq!(quick.observation_epochs(), vec![0, 2, 4, 6, 8, 10, 11]);
        let one = f
            .schedule("quick", Path::new("x"))
            .unwrap()
            .resolve("quick", 1);
        assert_eq!(one.observation_epochs(), vec![0]);
        let sel = f.select(&["no-flow".into()]).unwrap();
        assert_eq!(sel.len(), 1);
        assert_eq!(sel[0].model_config(0.5).unwrap().in_channels, 2);
        assert!(f
            .select(&["zzz".into()])
            .unwrap_err()
            .to_string()
            .contains("unknown experiment `zzz`"));
    }

    #[test]
    fn rejects_bad_files() {
        for (edit, needle) in [
            (
                (
                    "variant = \"ta\"\ninput = \"flow3\"",
                    "variant = \"xx\"\ninput = \"flow3\"",
                ),
                "unknown model variant",
            ),
            (
                ("input = \"raw-images\"", "input = \"jpeg\""),
                "unknown input kind",
            ),
            (
                ("experiment = \"ta\"", "experiment = \"nope\""),
                "unknown experiment `nope`",
            ),
            (("budget_secs = 600", "lr_step = 3"), "budget_secs"),
            (("seed = 3", "seed = 3\ncolour = 1"), "unknown field"),
        ] {
            let text = TEXT.replacen(edit.0, edit.1, 1);
            let e = ExperimentsFile::parse(&text, Path::new("x.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle) && e.contains("x.toml"), "{e}");
        }
    }

    /// The repository's experiments file parses and defines the paper's Tables 3 and 4.
    #[test]
    fn repository_experiments_file_is_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let f = ExperimentsFile::load(&default_experiments_file(&root)).unwrap();
        let ids: Vec<&str> = f.tables.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["table3", "table4"]);
        assert_eq!(f.tables[0].rows.len(), 4);
        assert_eq!(f.tables[1].rows.len(), 5);
        assert!(f.schedules.contains_key("paper") && f.schedules.contains_key("quick"));
        let paper = f.schedules["paper"].resolve("paper", f.schedules["paper"].epochs.unwrap());
        assert_eq!(
            (
                paper.epochs,
                paper.batch_size,
                paper.lr,
                paper.lr_decay,
                paper.lr_step,
                paper.eval_every
            ),
            (201, 64, 1e-3, 0.3, 60, 20)
        );
    }
}
