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
//! [[experiments]]              # a Table 2 baseline, on its own input and settings
//! name = "micro-attention"
//! model = "micro-attention"    # off-apexnet | ststnet | dual-inception | macnn | micro-attention
//! input = "flow3"
//! size = 224                   # the input's side (default 112)
//! [experiments.schedules.paper]  # replaces the run's settings under `paper`
//! epochs = 51
//! batch_size = 10
//! lr = 1e-3
//! lr_decay = 0.1
//! lr_step = 10
//! eval_every = 10
//! optimizer = "sgd"
//! momentum = 0.9
//! weight_decay = 5e-4
//! [experiments.schedules.quick]
//! epochs_fraction = 0.125      # of the run's epochs (a slow model)
//!
//! [[tables]]
//! id = "table4"
//! title = "Table 4"
//! rows = [{ experiment = "ta", label = "Off-TANet (Ours)", paper_uar = 0.7315, paper_uf1 = 0.7242 }]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mer_data::InputKind;
use mer_model::{Baseline, ModelConfig, ModelSpec, Variant};
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
    /// The optimiser (Adam unless an experiment's schedule override says otherwise).
    #[serde(default, skip_serializing_if = "Optimizer::is_adam")]
    pub optimizer: Optimizer,
    /// Whether the epochs were fixed on the command line (`--epochs`): then every
    /// experiment trains that many, whatever its own schedule override says.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub epochs_given: bool,
}

/// The optimiser of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Optimizer {
    /// Adam (betas 0.9 / 0.999, eps 1e-8, no weight decay): the reference's default.
    #[default]
    Adam,
    /// SGD with momentum and L2 weight decay (Micro-Attention's).
    Sgd {
        /// Momentum.
        momentum: f64,
        /// Weight decay added to the gradient.
        weight_decay: f64,
    },
}

impl Optimizer {
    /// Whether this is Adam.
    pub fn is_adam(&self) -> bool {
        *self == Optimizer::Adam
    }

    /// `Adam` or `SGD (momentum 0.9, weight decay 0.0005)`.
    pub fn describe(&self) -> String {
        match self {
            Optimizer::Adam => "Adam".into(),
            Optimizer::Sgd {
                momentum,
                weight_decay,
            } => format!("SGD (momentum {momentum}, weight decay {weight_decay})"),
        }
    }

    /// The model crate's optimiser settings at learning rate `lr`.
    pub fn config(&self, lr: f64) -> mer_model::OptimizerConfig {
        match *self {
            Optimizer::Adam => mer_model::AdamConfig {
                lr,
                ..Default::default()
            }
            .into(),
            Optimizer::Sgd {
                momentum,
                weight_decay,
            } => mer_model::SgdConfig {
                lr,
                momentum,
                weight_decay,
            }
            .into(),
        }
    }
}

/// An experiment's own settings under one named schedule (`[experiments.schedules.quick]`):
/// each given field replaces the run's; the rest is the run's schedule. A baseline has the
/// reference's settings under `paper` and a shorter, measured setting under `quick`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleOverride {
    /// Epochs of this experiment (ignored when `--epochs` fixes every experiment's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    /// Epochs as a fraction of the run's (rounded, at least 1): a model much slower per
    /// sample than Off-TANet gets fewer epochs, and keeps that proportion when `--epochs`
    /// or `--budget` changes the run's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs_fraction: Option<f64>,
    /// Mini-batch size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Initial learning rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Step decay factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_decay: Option<f64>,
    /// Epochs between decays (absent: the run's interval scaled to this experiment's epochs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_step: Option<usize>,
    /// Epochs between observations (absent: the run's scaled to this experiment's epochs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_every: Option<usize>,
    /// `adam` (default) or `sgd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<String>,
    /// SGD's momentum (default 0.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f64>,
    /// SGD's weight decay (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
}

impl ScheduleOverride {
    fn validate(&self, exp: &str, sched: &str) -> std::result::Result<(), String> {
        let e = |m: &str| Err(format!("experiment `{exp}`, schedule `{sched}`: {m}"));
        if self.epochs == Some(0)
            || self.batch_size == Some(0)
            || self.lr_step == Some(0)
            || self.eval_every == Some(0)
        {
            return e("epochs, batch_size, lr_step and eval_every must be at least 1");
        }
        if self.epochs.is_some() && self.epochs_fraction.is_some() {
            return e("give `epochs` or `epochs_fraction`, not both");
        }
        if self.epochs_fraction.is_some_and(|f| !(f > 0.0))
            || self.lr.is_some_and(|x| !(x > 0.0))
            || self.lr_decay.is_some_and(|x| !(x > 0.0))
        {
            return e("epochs_fraction, lr and lr_decay must be positive");
        }
        match self.optimizer.as_deref() {
            None | Some("adam") => {
                if self.momentum.is_some() || self.weight_decay.is_some() {
                    return e("momentum and weight_decay are SGD's (optimizer = \"sgd\")");
                }
            }
            Some("sgd") => {}
            Some(o) => return e(&format!("unknown optimizer `{o}`: adam or sgd")),
        }
        Ok(())
    }
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
            optimizer: Optimizer::Adam,
            epochs_given: false,
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

/// One experiment: a network (Off-TANet in one of its variants, or a Table 2 baseline) on
/// an input kind at a size, optionally with its own settings per schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// Unique name (used in file names and `--only`).
    pub name: String,
    /// The network: `off-tanet` (default) or a baseline (`off-apexnet`, `ststnet`,
    /// `dual-inception`, `macnn`, `micro-attention`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Off-TANet's variant: `res`, `cbam`, `sa`, `bot`, `ta`, `all-ta` (empty for a baseline).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
    /// Input kind: `flow3`, `flow-no-strain`, `raw-images`.
    pub input: String,
    /// Side of the input (default 112; a baseline's own: 28, 112 or 224).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    /// This experiment's settings under a named schedule (see [`ScheduleOverride`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub schedules: BTreeMap<String, ScheduleOverride>,
    /// What the experiment is.
    #[serde(default)]
    pub description: String,
}

impl ExperimentSpec {
    /// The parsed variant (Off-TANet experiments only).
    pub fn variant(&self) -> Result<Variant> {
        Ok(self.variant.parse::<Variant>()?)
    }
    /// The parsed input kind.
    pub fn input_kind(&self) -> Result<InputKind> {
        self.input.parse::<InputKind>().map_err(Error::Invalid)
    }
    /// The input's side.
    pub fn input_size(&self) -> usize {
        self.size.unwrap_or(mer_model::INPUT_SIZE)
    }
    /// The network and its input channels (Off-TANet's from the input kind).
    pub fn model_spec(&self, dropout: f32) -> Result<ModelSpec> {
        match self.model.as_deref() {
            None | Some("off-tanet") => Ok(ModelSpec::OffTaNet(
                ModelConfig::new(self.variant()?)
                    .with_in_channels(self.input_kind()?.channels())
                    .with_dropout(dropout),
            )),
            Some(m) => Ok(ModelSpec::Baseline(m.parse::<Baseline>()?)),
        }
    }
    /// The Off-TANet configuration (an error for a baseline).
    pub fn model_config(&self, dropout: f32) -> Result<ModelConfig> {
        match self.model_spec(dropout)? {
            ModelSpec::OffTaNet(c) => Ok(c),
            ModelSpec::Baseline(b) => Err(Error::Invalid(format!(
                "experiment `{}` is the baseline {b}, not an Off-TANet variant",
                self.name
            ))),
        }
    }
    /// Whether the network is a Table 2 baseline.
    pub fn is_baseline(&self) -> bool {
        self.model.as_deref().is_some_and(|m| m != "off-tanet")
    }
    /// The model's name as the report prints it: the variant, or the baseline's name.
    pub fn model_label(&self) -> &str {
        match self.model.as_deref() {
            Some(m) if m != "off-tanet" => m,
            _ => &self.variant,
        }
    }

    /// This experiment's schedule in a run of schedule `run`: the run's, with this
    /// experiment's override for `run.name` applied. Without `--epochs`, an override's
    /// `epochs` replaces the run's and `epochs_fraction` scales them; the decay and
    /// observation intervals not given scale with the epochs.
    pub fn schedule(&self, run: &Schedule) -> Schedule {
        let Some(o) = self.schedules.get(&run.name) else {
            return run.clone();
        };
        let epochs = if run.epochs_given {
            run.epochs
        } else if let Some(e) = o.epochs {
            e
        } else if let Some(f) = o.epochs_fraction {
            ((run.epochs as f64 * f).round() as usize).max(1)
        } else {
            run.epochs
        };
        let scale =
            |x: usize| ((x as f64 * epochs as f64 / run.epochs as f64).round() as usize).max(1);
        let optimizer = match o.optimizer.as_deref() {
            Some("sgd") => Optimizer::Sgd {
                momentum: o.momentum.unwrap_or(0.9),
                weight_decay: o.weight_decay.unwrap_or(0.0),
            },
            _ => Optimizer::Adam,
        };
        Schedule {
            name: run.name.clone(),
            epochs,
            batch_size: o.batch_size.unwrap_or(run.batch_size),
            lr: o.lr.unwrap_or(run.lr),
            lr_decay: o.lr_decay.unwrap_or(run.lr_decay),
            lr_step: o.lr_step.unwrap_or_else(|| scale(run.lr_step)),
            eval_every: o.eval_every.unwrap_or_else(|| scale(run.eval_every)),
            dropout: run.dropout,
            optimizer,
            epochs_given: run.epochs_given,
        }
    }

    /// Everything that defines the experiment's cells (all but the description), as text.
    pub fn definition(&self) -> String {
        let mut e = self.clone();
        e.description.clear();
        serde_json::to_string(&e).unwrap_or_default()
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let name = &self.name;
        let kind = self
            .input_kind()
            .map_err(|x| format!("experiment `{name}`: {x}"))?;
        match self.model.as_deref() {
            None | Some("off-tanet") => {
                self.variant()
                    .map_err(|x| format!("experiment `{name}`: {x}"))?;
                if self.input_size() != mer_model::INPUT_SIZE {
                    return Err(format!(
                        "experiment `{name}`: Off-TANet takes {0}x{0} inputs, not size {1}",
                        mer_model::INPUT_SIZE,
                        self.input_size()
                    ));
                }
            }
            Some(m) => {
                let b = m
                    .parse::<Baseline>()
                    .map_err(|x| format!("experiment `{name}`: {x}"))?;
                if !self.variant.is_empty() {
                    return Err(format!(
                        "experiment `{name}`: `variant` is Off-TANet's; the baseline {b} has none"
                    ));
                }
                let (c, side) = b.input_shape();
                if (kind.channels(), self.input_size()) != (c, side) {
                    return Err(format!(
                        "experiment `{name}`: {} takes [{c}, {side}, {side}], but input `{}` at size {} gives [{}, {2}, {2}]",
                        b.display_name(),
                        self.input,
                        self.input_size(),
                        kind.channels()
                    ));
                }
            }
        }
        for (sched, o) in &self.schedules {
            o.validate(name, sched)?;
        }
        Ok(())
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
    /// The paper's parameter count as printed (Table 2: `2.66M`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paper_params: Option<String>,
    /// The paper's Flops as printed (Table 2: `3.87M`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paper_flops: Option<String>,
    /// The paper's MemR+W as printed (Table 2: `10.35MB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paper_mem_rw: Option<String>,
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
            e.validate()?;
            for sched in e.schedules.keys() {
                if !self.schedules.contains_key(sched) {
                    return Err(format!(
                        "experiment `{}`: settings for schedule `{sched}`, which is not defined",
                        e.name
                    ));
                }
            }
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
        assert_eq!(ids, ["table2", "table3", "table4"]);
        assert_eq!(f.tables[0].rows.len(), 6);
        assert_eq!(f.tables[1].rows.len(), 4);
        assert_eq!(f.tables[2].rows.len(), 5);
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
        // The baselines' reference settings (baselines-notes.md, "Training and evaluation").
        let get = |n: &str| f.experiments.iter().find(|e| e.name == n).unwrap();
        let sched = |n: &str| get(n).schedule(&paper);
        let row = |s: &Schedule| {
            (
                s.epochs,
                s.batch_size,
                s.lr,
                s.lr_decay,
                s.lr_step,
                s.eval_every,
            )
        };
        assert_eq!(row(&sched("off-apexnet")), (3000, 64, 1e-4, 1.0, 9999, 200));
        let obs = sched("off-apexnet").observation_epochs();
        assert_eq!(obs.len(), 16, "0, 200, ..., 2800 and the last epoch");
        assert_eq!((obs[14], obs[15]), (2800, 2999));
        assert_eq!(row(&sched("ststnet")), (1001, 64, 5e-5, 1.0, 9999, 20));
        assert_eq!(sched("ststnet").observation_epochs().len(), 51);
        assert_eq!(
            row(&sched("dual-inception")),
            (501, 64, 1e-3, 1.0, 9999, 20)
        );
        let macnn = sched("macnn");
        assert_eq!(row(&macnn), (501, 64, 1e-3, 0.9, 50, 20));
        assert!((macnn.lr_at(100) - 1e-3 * 0.81).abs() < 1e-15);
        let ma = sched("micro-attention");
        assert_eq!(row(&ma), (51, 10, 1e-3, 0.1, 10, 10));
        assert_eq!(ma.observation_epochs(), vec![0, 10, 20, 30, 40, 50]);
        assert!((ma.lr_at(50) - 1e-8).abs() < 1e-20 && (ma.lr_at(19) - 1e-4).abs() < 1e-18);
        assert_eq!(
            ma.optimizer,
            Optimizer::Sgd {
                momentum: 0.9,
                weight_decay: 5e-4
            }
        );
        for n in ["off-apexnet", "ststnet", "dual-inception", "macnn"] {
            assert!(sched(n).optimizer.is_adam(), "{n}");
        }
        // Each baseline's model and input agree (checked on parsing) and name the notes' shapes.
        for (n, shape) in [
            ("off-apexnet", (2, 28)),
            ("ststnet", (3, 28)),
            ("dual-inception", (2, 28)),
            ("macnn", (3, 112)),
            ("micro-attention", (3, 224)),
        ] {
            assert_eq!(get(n).model_spec(0.5).unwrap().input_shape(), shape, "{n}");
        }
        // `--epochs` fixes every experiment's epochs, whatever its own settings.
        let given = Schedule {
            epochs_given: true,
            ..f.schedules["quick"].resolve("quick", 3)
        };
        for e in &f.experiments {
            assert_eq!(e.schedule(&given).epochs, 3, "{}", e.name);
        }
    }

    #[test]
    fn experiment_overrides_are_checked_and_applied() {
        let base = TEXT.replace(
            "[[experiments]]\nname = \"no-flow\"",
            "[[experiments]]\nname = \"st\"\nmodel = \"ststnet\"\ninput = \"flow3\"\nsize = 28\n[experiments.schedules.quick]\nepochs_fraction = 0.5\nlr = 1e-4\n[[experiments]]\nname = \"no-flow\"",
        );
        let f = ExperimentsFile::parse(&base, Path::new("x.toml")).unwrap();
        let st = f.experiments.iter().find(|e| e.name == "st").unwrap();
        let run = f.schedules["quick"].resolve("quick", 12);
        let s = st.schedule(&run);
        assert_eq!((s.epochs, s.lr, s.lr_step, s.eval_every), (6, 1e-4, 2, 1));
        assert_eq!(st.model_label(), "ststnet");
        assert!(st.model_config(0.5).is_err());
        // Another schedule: the run's settings.
        let paper = f.schedules["paper"].resolve("paper", 201);
        assert_eq!(st.schedule(&paper), paper);
        for (from, to, needle) in [
            (
                "size = 28\n",
                "",
                "takes [3, 28, 28], but input `flow3` at size 112",
            ),
            (
                "model = \"ststnet\"",
                "model = \"ststnet\"\nvariant = \"ta\"",
                "has none",
            ),
            (
                "lr = 1e-4",
                "lr = 1e-4\noptimizer = \"rmsprop\"",
                "unknown optimizer `rmsprop`",
            ),
            (
                "epochs_fraction = 0.5",
                "epochs_fraction = 0.5\nepochs = 3",
                "not both",
            ),
            (
                "[experiments.schedules.quick]",
                "[experiments.schedules.slow]",
                "schedule `slow`, which is not defined",
            ),
        ] {
            let text = base.replacen(from, to, 1);
            let err = ExperimentsFile::parse(&text, Path::new("x.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{from} -> {to}: {err}");
        }
    }
}
