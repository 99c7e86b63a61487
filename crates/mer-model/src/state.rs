//! The state dict of a network built through the layer registry: its tensors in the
//! reference's order (parameters; per BatchNorm its running statistics and
//! `num_batches_tracked`), loading from `.pth`/`.safetensors` with every key and shape
//! checked, and saving. Off-TANet and the Table 2 baselines share it.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};

use crate::layers::Entry;
use crate::{Error, Result};

/// A network's registered tensors.
#[derive(Debug, Clone)]
pub(crate) struct StateDict {
    entries: Vec<Entry>,
    dtype: DType,
    device: Device,
    /// The network's name, for errors.
    owner: &'static str,
}

impl StateDict {
    pub(crate) fn new(
        entries: Vec<Entry>,
        dtype: DType,
        device: Device,
        owner: &'static str,
    ) -> Self {
        StateDict {
            entries,
            dtype,
            device,
            owner,
        }
    }

    /// Trainable parameters (state_dict name, tensor), in state_dict order.
    pub(crate) fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.entries
            .iter()
            .filter_map(|e| match e {
                Entry::Param { name, tensor } => Some((name.clone(), tensor.clone())),
                Entry::BatchNorm { .. } => None,
            })
            .collect()
    }

    /// The trainable variables (empty for a network built from a read-only builder).
    pub(crate) fn trainable_vars(&self) -> Vec<Var> {
        self.named_parameters()
            .into_iter()
            .filter(|(_, t)| t.is_variable())
            .filter_map(|(_, t)| Var::from_tensor(&t).ok())
            .collect()
    }

    /// Number of trainable parameter values (see [`Baseline::expected_params`]).
    pub(crate) fn num_params(&self) -> usize {
        self.named_parameters()
            .iter()
            .map(|(_, t)| t.elem_count())
            .sum()
    }

    /// The state dict as the reference stores it, in its order: parameters, and per
    /// BatchNorm `running_mean`, `running_var` and an i64 scalar `num_batches_tracked`.
    pub(crate) fn state_dict(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for e in &self.entries {
            match e {
                Entry::Param { name, tensor } => out.push((name.clone(), tensor.detach())),
                Entry::BatchNorm { name, stats } => {
                    let s = stats.lock().unwrap_or_else(|e| e.into_inner());
                    out.push((format!("{name}.running_mean"), s.running_mean.clone()));
                    out.push((format!("{name}.running_var"), s.running_var.clone()));
                    out.push((
                        format!("{name}.num_batches_tracked"),
                        Tensor::new(s.num_batches_tracked, &self.device)?,
                    ));
                }
            }
        }
        Ok(out)
    }

    /// (name, shape) of every state-dict entry in order, with whether it is a BatchNorm
    /// entry (`weight`, `bias`, running statistics, `num_batches_tracked`; shape `[]`).
    pub(crate) fn layout(&self) -> Vec<(String, Vec<usize>, bool)> {
        let bn: HashSet<&str> = self
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::BatchNorm { name, .. } => Some(name.as_str()),
                Entry::Param { .. } => None,
            })
            .collect();
        let mut out = Vec::new();
        for e in &self.entries {
            match e {
                Entry::Param { name, tensor } => {
                    let prefix = name.rsplit_once('.').map_or("", |p| p.0);
                    out.push((name.clone(), tensor.dims().to_vec(), bn.contains(prefix)));
                }
                Entry::BatchNorm { name, stats } => {
                    let c = stats
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .running_mean
                        .dims()
                        .to_vec();
                    out.push((format!("{name}.running_mean"), c.clone(), true));
                    out.push((format!("{name}.running_var"), c, true));
                    out.push((format!("{name}.num_batches_tracked"), vec![], true));
                }
            }
        }
        out
    }

    /// Expected (name, shape) of every state-dict tensor, `num_batches_tracked` excluded.
    pub(crate) fn expected_keys(&self) -> Vec<(String, Vec<usize>)> {
        self.layout()
            .into_iter()
            .filter(|(k, _, _)| !k.ends_with(".num_batches_tracked"))
            .map(|(k, s, _)| (k, s))
            .collect()
    }

    /// Sets one state-dict entry (a trainable parameter or a BatchNorm buffer) by name.
    pub(crate) fn set_entry(&self, key: &str, value: &Tensor) -> Result<()> {
        let get =
            |t: &Tensor| -> Result<Tensor> { Ok(t.to_device(&self.device)?.to_dtype(self.dtype)?) };
        for e in &self.entries {
            match e {
                Entry::Param { name, tensor } if name == key => {
                    if !tensor.is_variable() {
                        return Err(Error::Config(format!(
                            "cannot set `{name}`: expected a network built on a VarMap (trainable), found read-only weights"
                        )));
                    }
                    if tensor.dims() != value.dims() {
                        return Err(Error::ShapeMismatch {
                            source_name: "set_entry".into(),
                            key: key.into(),
                            expected: tensor.dims().to_vec(),
                            found: value.dims().to_vec(),
                        });
                    }
                    // A copy, so that a model's own state dict can be loaded back into it.
                    Var::from_tensor(tensor)?.set(&get(value)?.copy()?)?;
                    return Ok(());
                }
                Entry::BatchNorm { name, stats } => {
                    let Some(leaf) = key
                        .strip_prefix(name.as_str())
                        .and_then(|r| r.strip_prefix('.'))
                    else {
                        continue;
                    };
                    let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
                    match leaf {
                        "running_mean" => s.running_mean = get(value)?,
                        "running_var" => s.running_var = get(value)?,
                        "num_batches_tracked" => {
                            s.num_batches_tracked = value
                                .to_dtype(DType::I64)?
                                .flatten_all()?
                                .to_vec1::<i64>()?
                                .first()
                                .copied()
                                .unwrap_or(0)
                        }
                        _ => continue,
                    }
                    return Ok(());
                }
                Entry::Param { .. } => {}
            }
        }
        Err(Error::Config(format!(
            "{}: no state-dict entry `{key}`",
            self.owner
        )))
    }

    /// Replaces all weights and BatchNorm statistics with `tensors` (state_dict names).
    ///
    /// Every expected tensor must be present with its shape; `num_batches_tracked` is
    /// optional; unexpected keys are logged and ignored. `source` names the origin in errors.
    pub(crate) fn load_state_dict(
        &self,
        tensors: &HashMap<String, Tensor>,
        source: &str,
    ) -> Result<()> {
        let expected = self.expected_keys();
        let missing: Vec<_> = expected
            .iter()
            .filter(|(k, _)| !tensors.contains_key(k))
            .cloned()
            .collect();
        if !missing.is_empty() {
            let mut keys: Vec<&String> = tensors.keys().collect();
            keys.sort();
            let sample = keys
                .iter()
                .take(4)
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::MissingKeys {
                source_name: source.to_string(),
                missing,
                expected_count: expected.len(),
                found_count: tensors.len(),
                found_sample: if keys.len() > 4 {
                    format!("{sample}, ...")
                } else {
                    sample
                },
            });
        }
        for (k, shape) in &expected {
            let found = tensors[k].dims();
            if found != shape.as_slice() {
                return Err(Error::ShapeMismatch {
                    source_name: source.to_string(),
                    key: k.clone(),
                    expected: shape.clone(),
                    found: found.to_vec(),
                });
            }
        }
        let layout = self.layout();
        for (k, _, _) in &layout {
            if let Some(t) = tensors.get(k) {
                self.set_entry(k, t)?;
            }
        }
        let known: HashSet<&String> = layout.iter().map(|(k, _, _)| k).collect();
        let mut extra: Vec<&String> = tensors.keys().filter(|k| !known.contains(k)).collect();
        if !extra.is_empty() {
            extra.sort();
            tracing::warn!(source, ?extra, "ignoring tensors the model does not use");
        }
        tracing::debug!(source, tensors = expected.len(), "loaded weights");
        Ok(())
    }

    /// Loads weights from a `.pth` (PyTorch zip pickle holding a state_dict) or a
    /// `.safetensors` file, chosen by extension.
    pub(crate) fn load_file(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(Error::Io {
                path: path.to_path_buf(),
                err: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let tensors: HashMap<String, Tensor> = match ext.as_str() {
            "pth" | "pt" => candle_core::pickle::read_all(path)?.into_iter().collect(),
            "safetensors" => candle_core::safetensors::load(path, &Device::Cpu)?,
            _ => return Err(Error::WeightsFormat(path.to_path_buf())),
        };
        self.load_state_dict(&tensors, &path.display().to_string())
    }

    /// Saves the state dict (BatchNorm statistics included, `num_batches_tracked` as i64)
    /// to a safetensors file.
    pub(crate) fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<()> {
        let map: HashMap<String, Tensor> = self.state_dict()?.into_iter().collect();
        candle_core::safetensors::save(&map, path.as_ref())?;
        Ok(())
    }
}
