//! Every network of the project behind one type: Off-TANet (and its ablation variants) and
//! the five Table 2 baselines. [`ModelSpec`] names one (a value, cheap to copy, parsed from
//! the names the command line and the experiments file use); [`Net`] is one with weights.
//! Training ([`crate::Trainer`]), evaluation and the run folder's cells go through these,
//! so that a baseline is trained and scored exactly like Off-TANet.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};

use crate::{Baseline, BaselineNet, Error, ModelConfig, OffTaNet, Result, INPUT_SIZE};

/// Which network: an Off-TANet configuration or a baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ModelSpec {
    /// Off-TANet or one of its ablation variants.
    OffTaNet(ModelConfig),
    /// One of the five Table 2 baselines (their dropout is the reference's 0.5).
    Baseline(Baseline),
}

impl ModelSpec {
    /// The model's name: the Off-TANet variant (`ta`, `res`, ...) or the baseline's
    /// (`off-apexnet`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            ModelSpec::OffTaNet(c) => c.variant.name(),
            ModelSpec::Baseline(b) => b.name(),
        }
    }

    /// The name the paper prints (`Off-TANet`, `Off-ApexNet`, `STSTNet`, ...).
    pub fn display_name(&self) -> &'static str {
        match self {
            ModelSpec::OffTaNet(_) => "Off-TANet",
            ModelSpec::Baseline(b) => b.display_name(),
        }
    }

    /// `(C, S)` of one input sample `[C, S, S]`.
    pub fn input_shape(&self) -> (usize, usize) {
        match self {
            ModelSpec::OffTaNet(c) => (c.in_channels, INPUT_SIZE),
            ModelSpec::Baseline(b) => b.input_shape(),
        }
    }

    /// A key that tells distinct networks apart (`ta/3ch`, `macnn`).
    pub fn key(&self) -> String {
        match self {
            ModelSpec::OffTaNet(c) => format!("{}/{}ch", c.variant, c.in_channels),
            ModelSpec::Baseline(b) => b.name().to_string(),
        }
    }

    /// Trainable parameters (from the architecture; no weights are built for baselines).
    pub fn num_params(&self) -> Result<usize> {
        Ok(match self {
            ModelSpec::OffTaNet(c) => OffTaNet::random(c, &Device::Cpu)?.num_params(),
            ModelSpec::Baseline(b) => b.summary().total_params(),
        })
    }

    /// Floating-point operations per sample of one forward pass, torchstat's way (the
    /// static cost used to plan and shard cells).
    pub fn flops(&self) -> Result<u64> {
        Ok(match self {
            ModelSpec::OffTaNet(c) => OffTaNet::random(c, &Device::Cpu)?.summary().total_flops(),
            ModelSpec::Baseline(b) => b.summary().total_flops(),
        })
    }

    /// torchstat's MemR+W of one sample's forward pass, in MiB (its "MB" column).
    pub fn mem_rw_mib(&self) -> Result<f64> {
        Ok(match self {
            ModelSpec::OffTaNet(c) => OffTaNet::random(c, &Device::Cpu)?
                .summary()
                .total_mem_rw_mib(),
            ModelSpec::Baseline(b) => b.summary().total_mem_rw_mib(),
        })
    }

    /// A network with fresh random weights (f32, PyTorch's default initialisation).
    pub fn random(&self, device: &Device) -> Result<Net> {
        self.random_with_dtype(DType::F32, device)
    }

    /// A network with fresh random weights of `dtype`.
    pub fn random_with_dtype(&self, dtype: DType, device: &Device) -> Result<Net> {
        Ok(match self {
            ModelSpec::OffTaNet(c) => Net::OffTaNet(OffTaNet::random_with_dtype(c, dtype, device)?),
            ModelSpec::Baseline(b) => {
                Net::Baseline(BaselineNet::random_with_dtype(*b, dtype, device)?)
            }
        })
    }

    /// A trainable f32 network with the weights of a `.pth` or `.safetensors` file.
    pub fn load(&self, path: impl AsRef<Path>, device: &Device) -> Result<Net> {
        let net = self.random(device)?;
        net.load_file(path)?;
        Ok(net)
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A network with its weights: Off-TANet or a baseline.
#[derive(Debug, Clone)]
pub enum Net {
    /// Off-TANet or a variant.
    OffTaNet(OffTaNet),
    /// A Table 2 baseline.
    Baseline(BaselineNet),
}

impl From<OffTaNet> for Net {
    fn from(n: OffTaNet) -> Self {
        Net::OffTaNet(n)
    }
}

impl From<BaselineNet> for Net {
    fn from(n: BaselineNet) -> Self {
        Net::Baseline(n)
    }
}

macro_rules! both {
    ($self:expr, $n:ident => $e:expr) => {
        match $self {
            Net::OffTaNet($n) => $e,
            Net::Baseline($n) => $e,
        }
    };
}

impl Net {
    /// What the network is.
    pub fn spec(&self) -> ModelSpec {
        match self {
            Net::OffTaNet(n) => ModelSpec::OffTaNet(*n.config()),
            Net::Baseline(n) => ModelSpec::Baseline(n.kind()),
        }
    }

    /// The Off-TANet inside, if it is one.
    pub fn as_offtanet(&self) -> Option<&OffTaNet> {
        match self {
            Net::OffTaNet(n) => Some(n),
            Net::Baseline(_) => None,
        }
    }

    /// Logits `[N, 3]`; `train` selects training mode (dropout, BatchNorm batch statistics).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        both!(self, n => n.forward_t(x, train))
    }

    /// Checks an input's shape against the model's `[N, C, S, S]`.
    pub fn check_input(&self, x: &Tensor) -> Result<()> {
        both!(self, n => n.check_input(x))
    }

    /// Seeds training-mode dropout (see [`OffTaNet::seed_dropout`]).
    pub fn seed_dropout(&self, seed: u64) {
        both!(self, n => n.seed_dropout(seed))
    }

    /// Trainable parameters in state_dict order.
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        both!(self, n => n.named_parameters())
    }

    /// The trainable variables.
    pub fn trainable_vars(&self) -> Vec<Var> {
        both!(self, n => n.trainable_vars())
    }

    /// Number of trainable parameter values.
    pub fn num_params(&self) -> usize {
        both!(self, n => n.num_params())
    }

    /// The state dict in the reference's order (BatchNorm statistics included).
    pub fn state_dict(&self) -> Result<Vec<(String, Tensor)>> {
        both!(self, n => n.state_dict())
    }

    /// Replaces every state-dict entry (see [`OffTaNet::load_state_dict`]).
    pub fn load_state_dict(&self, tensors: &HashMap<String, Tensor>, source: &str) -> Result<()> {
        both!(self, n => n.load_state_dict(tensors, source))
    }

    /// Loads a `.pth` or `.safetensors` file.
    pub fn load_file(&self, path: impl AsRef<Path>) -> Result<()> {
        both!(self, n => n.load_file(path))
    }

    /// Saves the state dict as safetensors.
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<()> {
        both!(self, n => n.save_safetensors(path))
    }

    /// The device of the weights.
    pub fn device(&self) -> &Device {
        both!(self, n => n.device())
    }
}

impl std::str::FromStr for ModelSpec {
    type Err = Error;
    /// `off-tanet` (Off-TANet, variant `ta`, 3 channels) or a baseline's name.
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase().replace('_', "-");
        if t == "off-tanet" || t == "offtanet" {
            return Ok(ModelSpec::OffTaNet(ModelConfig::default()));
        }
        Baseline::from_name(s).map(ModelSpec::Baseline).map_err(|_| {
            Error::Config(format!(
                "unknown model `{s}`: expected one of off-tanet, off-apexnet, ststnet, dual-inception, macnn, micro-attention"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_describe_themselves() {
        let ta: ModelSpec = "off-tanet".parse().unwrap();
        assert_eq!((ta.name(), ta.input_shape()), ("ta", (3, 112)));
        assert_eq!(ta.num_params().unwrap(), 59_403);
        for b in Baseline::ALL {
            let s: ModelSpec = b.name().parse().unwrap();
            assert_eq!(s, ModelSpec::Baseline(b));
            assert_eq!(s.num_params().unwrap(), b.expected_params());
            assert_eq!(s.input_shape(), b.input_shape());
        }
        let e = "resnet".parse::<ModelSpec>().unwrap_err().to_string();
        assert!(e.contains("unknown model `resnet`"), "{e}");
    }
}
