//! The models of a finished run, for prediction on new clips (`cargo xtask predict --run`):
//! the run's final model of an experiment when there is one (`<run>/final/<experiment>.safetensors`,
//! trained on every subject by `cargo xtask train --out` there), else every finished fold
//! model of the experiment (all seeds) as an ensemble whose prediction is the mean of the
//! members' class probabilities.

use std::path::{Path, PathBuf};

use mer_model::candle_core::{Device, Tensor};
use mer_model::{ModelSpec, Net};

use crate::config::ExperimentSpec;
use crate::run_dir::RunFolder;
use crate::{Error, Result};

/// Where a run's final (every-subject) model of `experiment` lives.
pub fn final_model_path(run_dir: &Path, experiment: &str) -> PathBuf {
    run_dir
        .join("final")
        .join(format!("{}.safetensors", crate::io::file_safe(experiment)))
}

/// Which models of a run [`run_models`] found.
#[derive(Debug, Clone)]
pub struct RunModels {
    /// The experiment (its network, input kind and size).
    pub experiment: ExperimentSpec,
    /// The network.
    pub model: ModelSpec,
    /// The weight files, in seed then fold order (one file for a final model).
    pub weights: Vec<PathBuf>,
    /// Whether it is the run's final model (else the fold models).
    pub is_final: bool,
    /// Fold models expected (experiment's seeds x folds), for the fold ensemble.
    pub expected: usize,
}

/// The models of experiment `experiment` in the run folder `run_dir`: its final model if
/// present, else its finished fold models (an error when there are none, naming the run
/// and the experiments it has).
pub fn run_models(run_dir: &Path, experiment: &str) -> Result<RunModels> {
    let folder = RunFolder::open(run_dir)?;
    let settings = folder.settings()?;
    let (spec, seeds) = folder.experiment(experiment)?;
    let model = spec.model_spec(settings.schedule.dropout)?;
    let fin = final_model_path(run_dir, experiment);
    if fin.is_file() {
        // `cargo xtask train` writes what it trained on beside the weights.
        let record = fin.with_extension("json");
        match std::fs::read_to_string(&record)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        {
            Some(r) if r["list_hash"].as_str() == Some(settings.list_hash.as_str()) => {}
            Some(r) => tracing::warn!(
                "{} was trained on another sample list (hash {}) than run {} ({})",
                fin.display(),
                r["list_hash"].as_str().unwrap_or("?"),
                run_dir.display(),
                settings.list_hash
            ),
            None => tracing::warn!(
                "{}: no readable record {} of what it was trained on",
                fin.display(),
                record.display()
            ),
        }
        return Ok(RunModels {
            experiment: spec,
            model,
            weights: vec![fin],
            is_final: true,
            expected: 1,
        });
    }
    let (_, folds) = folder.samples()?;
    let mut weights = Vec::new();
    for &seed in &seeds {
        for f in &folds {
            let (json, w) = folder.cell_paths(experiment, seed, f);
            // A cell is finished when its record exists (written after its weights).
            if json.is_file() && w.is_file() {
                weights.push(w);
            }
        }
    }
    if weights.is_empty() {
        return Err(Error::Incomplete(format!(
            "run {}: no finished fold model of `{experiment}` (and no {}); finish the run first",
            run_dir.display(),
            fin.display()
        )));
    }
    Ok(RunModels {
        experiment: spec,
        model,
        weights,
        is_final: false,
        expected: seeds.len() * folds.len(),
    })
}

/// Several models of one network whose prediction is the mean of their probabilities.
pub struct Ensemble {
    /// The members.
    pub nets: Vec<Net>,
}

/// An ensemble's prediction for a batch.
#[derive(Debug, Clone)]
pub struct EnsemblePrediction {
    /// Mean of the members' softmax probabilities, `[N][classes]`.
    pub probabilities: Vec<Vec<f32>>,
    /// Mean of the members' logits, `[N][classes]` (one member: its logits).
    pub logits: Vec<Vec<f32>>,
    /// Each member's probabilities, `[member][N][classes]`.
    pub members: Vec<Vec<Vec<f32>>>,
}

impl Ensemble {
    /// Loads every weight file as `spec`.
    pub fn load(spec: &ModelSpec, weights: &[PathBuf], device: &Device) -> Result<Self> {
        let nets = weights
            .iter()
            .map(|w| spec.load(w, device).map_err(Error::from))
            .collect::<Result<Vec<_>>>()?;
        Ok(Ensemble { nets })
    }

    /// Evaluation-mode prediction of `x` `[N, C, S, S]`, `chunk` samples per forward pass.
    pub fn predict(&self, x: &Tensor, chunk: usize) -> Result<EnsemblePrediction> {
        let n = x.dim(0)?;
        let mut members = Vec::with_capacity(self.nets.len());
        let mut logit_sum: Vec<Vec<f64>> = vec![Vec::new(); n];
        for net in &self.nets {
            let mut chunks = Vec::new();
            for start in (0..n).step_by(chunk.max(1)) {
                let len = chunk.max(1).min(n - start);
                chunks.push(net.forward_t(&x.narrow(0, start, len)?, false)?);
            }
            let logits = Tensor::cat(&chunks, 0)?;
            for (acc, l) in logit_sum.iter_mut().zip(logits.to_vec2::<f32>()?) {
                acc.resize(l.len(), 0.0);
                for (a, v) in acc.iter_mut().zip(l) {
                    *a += v as f64;
                }
            }
            members.push(mer_model::candle_nn::ops::softmax(&logits, 1)?.to_vec2::<f32>()?);
        }
        let k = self.nets.len().max(1) as f64;
        let probabilities = (0..n)
            .map(|i| {
                (0..logit_sum[i].len())
                    .map(|c| (members.iter().map(|m| m[i][c] as f64).sum::<f64>() / k) as f32)
                    .collect()
            })
            .collect();
        let logits = logit_sum
            .into_iter()
            .map(|l| l.into_iter().map(|v| (v / k) as f32).collect())
            .collect();
        Ok(EnsemblePrediction {
            probabilities,
            logits,
            members,
        })
    }
}
