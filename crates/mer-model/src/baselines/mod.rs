//! The five published baselines of the paper's Table 2, as the reference repository
//! (PRICAI2021-Off-TANet, commit b6149ba) implements them: Off-ApexNet, STSTNet,
//! Dual-Inception, MACNN and Micro-Attention.
//!
//! - [`Baseline`] names a model (`off-apexnet`, `ststnet`, `dual-inception`, `macnn`,
//!   `micro-attention`) and its input shape; [`BaselineNet`] is the network.
//! - Tensor names and order equal the reference state_dict: the reference `.pth` files load
//!   as they are ([`BaselineNet::load`]) and safetensors round-trip with the same names
//!   ([`BaselineNet::save_safetensors`]).
//! - [`BaselineNet::forward_t`] in training mode (dropout active, Micro-Attention's BatchNorm
//!   on batch statistics with the running update, eps 1e-5, momentum 0.1) or evaluation mode;
//!   [`BaselineNet::forward_with_stages`] also returns the stage outputs the reference files
//!   hold (`shared/reference/baselines/README.md`).
//! - Max pools with padding pad with minus infinity (PyTorch's semantics), never zeros.
//! - An input of the wrong shape is an [`Error::InputShape`] naming
//!   the expected and the found shape; nothing is reshaped silently.
//! - [`formula`]: the deterministic "formula weights" of the reference outputs.
//! - [`BaselineNet::summary`]: torchstat 0.0.7's Params, Flops and MemR+W columns
//!   ([`TorchstatSummary`]).
//!
//! The oddities of the reference code are kept (see `shared/docs/baselines-notes.md`): no
//! activations in the convolutional stages of Off-ApexNet and STSTNet, Dual-Inception's bare
//! path4, MACNN's 3 input channels (the published complexity figures were measured on 2),
//! Micro-Attention's `convr` bias (no effect on the output, counted and kept).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Init, VarBuilder, VarMap};

use crate::layers::{max_keepdim_first, Ctx};
use crate::state::StateDict;
use crate::{Error, Result};

mod dual_inception;
pub mod formula;
mod macnn;
mod micro_attention;
mod off_apexnet;
mod ststnet;
mod summary;

pub use summary::{torchstat_format, TorchstatRow, TorchstatSummary};

use dual_inception::DualInception;
use macnn::Macnn;
use micro_attention::MicroAttention;
use off_apexnet::OffApexNet;
use ststnet::Ststnet;

/// One of the five Table 2 baselines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Baseline {
    /// Off-ApexNet: two linear conv streams (u, v) and a three-layer dense head; `[2, 28, 28]`.
    OffApexNet,
    /// STSTNet: three shallow conv streams on u, v, strain; `[3, 28, 28]`.
    Ststnet,
    /// Dual-Inception: two streams of two inception blocks (u, v); `[2, 28, 28]`.
    DualInception,
    /// MACNN: four residual VGG blocks, two atrous convolutions, dense head; `[3, 112, 112]`.
    Macnn,
    /// Micro-Attention: a stem and three micro-attention blocks with BatchNorm; `[3, 224, 224]`.
    MicroAttention,
}

impl Baseline {
    /// All five, in the paper's Table 2 order.
    pub const ALL: [Baseline; 5] = [
        Baseline::OffApexNet,
        Baseline::Ststnet,
        Baseline::DualInception,
        Baseline::Macnn,
        Baseline::MicroAttention,
    ];

    /// The command-line name: `off-apexnet`, `ststnet`, `dual-inception`, `macnn`,
    /// `micro-attention`.
    pub fn name(self) -> &'static str {
        match self {
            Baseline::OffApexNet => "off-apexnet",
            Baseline::Ststnet => "ststnet",
            Baseline::DualInception => "dual-inception",
            Baseline::Macnn => "macnn",
            Baseline::MicroAttention => "micro-attention",
        }
    }

    /// The name the paper prints: `Off-ApexNet`, `STSTNet`, `Dual-Inception`, `MACNN`,
    /// `Micro-Attention`.
    pub fn display_name(self) -> &'static str {
        match self {
            Baseline::OffApexNet => "Off-ApexNet",
            Baseline::Ststnet => "STSTNet",
            Baseline::DualInception => "Dual-Inception",
            Baseline::Macnn => "MACNN",
            Baseline::MicroAttention => "Micro-Attention",
        }
    }

    /// The file-name stem of the reference outputs (`off_apexnet`, ..., `micro_attention`).
    pub fn reference_name(self) -> &'static str {
        match self {
            Baseline::OffApexNet => "off_apexnet",
            Baseline::Ststnet => "ststnet",
            Baseline::DualInception => "dual_inception",
            Baseline::Macnn => "macnn",
            Baseline::MicroAttention => "micro_attention",
        }
    }

    /// Input channels and side `(C, S)` of one sample `[C, S, S]`: Off-ApexNet and
    /// Dual-Inception `(2, 28)` (u, v); STSTNet `(3, 28)`; MACNN `(3, 112)`; Micro-Attention
    /// `(3, 224)` (u, v, strain).
    pub fn input_shape(self) -> (usize, usize) {
        match self {
            Baseline::OffApexNet | Baseline::DualInception => (2, 28),
            Baseline::Ststnet => (3, 28),
            Baseline::Macnn => (3, 112),
            Baseline::MicroAttention => (3, 224),
        }
    }

    /// The trainable parameter count of the reference code.
    pub fn expected_params(self) -> usize {
        match self {
            Baseline::OffApexNet => 2_664_475,
            Baseline::Ststnet => 162_051,
            Baseline::DualInception => 6_449_867,
            Baseline::Macnn => 70_573_923,
            Baseline::MicroAttention => 53_384_195,
        }
    }

    /// torchstat 0.0.7's per-layer table (batch 1): Params, Flops, MemR+W. Computed from
    /// the architecture alone (no weights are built).
    pub fn summary(self) -> TorchstatSummary {
        summary::summarize(self)
    }

    /// Parses a command-line name (see [`Baseline::name`]; case-insensitive, `_` accepted
    /// for `-`).
    pub fn from_name(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase().replace('_', "-");
        Baseline::ALL
            .into_iter()
            .find(|b| b.name() == t)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown baseline model `{s}`: expected one of off-apexnet, ststnet, dual-inception, macnn, micro-attention"
                ))
            })
    }
}

impl fmt::Display for Baseline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Baseline {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Baseline::from_name(s)
    }
}

/// Stage outputs of one forward pass, `(stage name, tensor)` in forward order; the names are
/// those of the reference files (`cnn1`, `stream2`, `icpt1_0`, `res_vgg_3`, `aconv`,
/// `ma_0_convl_1`, `ma_2_softmax`, `dense_1`, ...).
pub type Stages = Vec<(String, Tensor)>;

/// Where training-mode dropout masks come from (see [`BaselineNet::seed_dropout`]).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct DropoutRng {
    /// `None`: candle's own dropout (its CPU generator cannot be seeded).
    seed: Option<u64>,
    /// Dropout layers applied so far since seeding (the stream of the next mask).
    calls: u64,
}

/// Uniform in `[0, 1)` for element `i` of mask `call` under `seed` (24 random bits): a
/// function of its arguments only, so masks depend neither on threads nor on timing.
fn dropout_uniform(seed: u64, call: u64, i: u64) -> f32 {
    use mer_common::rng::mix64;
    let key = mix64(seed ^ mix64(call.wrapping_add(0x9E37_79B9_7F4A_7C15)));
    (mix64(key.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))) >> 40) as f32
        / (1u64 << 24) as f32
}

/// The forward pass's mode and, when asked for, where stage outputs go.
pub(crate) struct Fwd<'a> {
    pub(crate) train: bool,
    stages: Option<&'a mut Stages>,
    rng: Option<&'a Mutex<DropoutRng>>,
}

impl Fwd<'_> {
    /// Records a stage output when stages are collected.
    pub(crate) fn tap(&mut self, name: &str, t: &Tensor) {
        if let Some(s) = self.stages.as_deref_mut() {
            s.push((name.to_string(), t.clone()));
        }
    }

    /// Dropout p = 0.5 in training (PyTorch's semantics: kept with probability 1 - p and
    /// scaled by 1 / (1 - p)), the identity in evaluation.
    pub(crate) fn dropout(&self, h: &Tensor) -> Result<Tensor> {
        const P: f32 = 0.5;
        if !self.train {
            return Ok(h.clone());
        }
        let seeded = self.rng.and_then(|r| {
            let mut r = r.lock().unwrap_or_else(|e| e.into_inner());
            let seed = r.seed?;
            r.calls += 1;
            Some((seed, r.calls - 1))
        });
        let Some((seed, call)) = seeded else {
            return Ok(candle_nn::ops::dropout(h, P)?);
        };
        let scale = 1.0 / (1.0 - P);
        let mask: Vec<f32> = (0..h.elem_count() as u64)
            .map(|i| {
                if dropout_uniform(seed, call, i) >= P {
                    scale
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, h.shape(), h.device())?.to_dtype(h.dtype())?;
        Ok(h.mul(&mask)?)
    }
}

/// PyTorch's default initialisation of conv and linear layers (weight and bias uniform in
/// +-1/sqrt(fan_in)).
pub(crate) fn torch_uniform(fan_in: usize) -> Init {
    let b = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform { lo: -b, up: b }
}

/// A 3x3-style dilated convolution (square kernel, stride 1, groups 1), PyTorch layout
/// `[out, in, k, k]`, with bias: MACNN's atrous layers. Plain candle ops.
#[derive(Debug, Clone)]
pub(crate) struct DilatedConv {
    weight: Tensor,
    bias: Tensor,
    padding: usize,
    dilation: usize,
}

impl DilatedConv {
    pub(crate) fn new(
        ctx: &Ctx,
        cin: usize,
        cout: usize,
        k: usize,
        padding: usize,
        dilation: usize,
    ) -> Result<Self> {
        let init = torch_uniform(cin * k * k);
        let weight = ctx.param(&[cout, cin, k, k], "weight", init)?;
        let bias = ctx.param(&[cout], "bias", init)?;
        Ok(Self {
            weight,
            bias,
            padding,
            dilation,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x
            .contiguous()?
            .conv2d(&self.weight, self.padding, 1, self.dilation, 1)?;
        Ok(y.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)?)
    }
}

/// Max pool with a `k x k` window, stride `s` and padding `p` on each side, PyTorch's
/// semantics: the padded cells hold minus infinity (they never win), no ceil mode, the
/// gradient goes to the first maximum of a window in row-major order.
///
/// On the CPU (f32, f64) a kernel with its own backward ([`crate::kernels::MaxPoolK`]);
/// with the fast kernels off ([`crate::with_plain_ops`]) plain candle ops (padding,
/// window gathers and a first-maximum reduction), which the tests compare it with.
pub(crate) fn max_pool_padded(x: &Tensor, k: usize, s: usize, p: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if h + 2 * p < k || w + 2 * p < k || p >= k {
        return Err(Error::Config(format!(
            "max pool {k}x{k}: input {h}x{w} with padding {p} is smaller than the window (or padding >= window)"
        )));
    }
    if crate::kernels::usable(x) && !crate::kernels::disabled() {
        return Ok(x
            .contiguous()?
            .apply_op1(crate::kernels::MaxPoolK { k, s, p })?);
    }
    let dev = x.device();
    let x = if p > 0 {
        let side = |rows: usize, cols: usize| -> Result<Tensor> {
            Ok(Tensor::full(f32::NEG_INFINITY, (n, c, rows, cols), dev)?.to_dtype(x.dtype())?)
        };
        let x = Tensor::cat(&[&side(p, w)?, x, &side(p, w)?], 2)?;
        Tensor::cat(&[&side(h + 2 * p, p)?, &x, &side(h + 2 * p, p)?], 3)?
    } else {
        x.clone()
    };
    let (hp, wp) = (h + 2 * p, w + 2 * p);
    if hp < k || wp < k {
        return Err(Error::Config(format!(
            "max pool {k}x{k}: input {h}x{w} with padding {p} is smaller than the window"
        )));
    }
    let (ho, wo) = ((hp - k) / s + 1, (wp - k) / s + 1);
    let index = |off: usize, len: usize| -> Result<Tensor> {
        let v: Vec<u32> = (0..len).map(|i| (off + s * i) as u32).collect();
        Ok(Tensor::from_vec(v, len, dev)?)
    };
    let mut parts = Vec::with_capacity(k * k);
    for di in 0..k {
        let rows = x.index_select(&index(di, ho)?, 2)?;
        for dj in 0..k {
            parts.push(rows.index_select(&index(dj, wo)?, 3)?.unsqueeze(4)?);
        }
    }
    let windows = Tensor::cat(&parts, 4)?;
    max_keepdim_first(&windows, 4)?
        .squeeze(4)
        .map_err(Error::from)
}

/// The model itself (one value per network, so the size difference does not matter).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Inner {
    OffApexNet(OffApexNet),
    Ststnet(Ststnet),
    DualInception(DualInception),
    Macnn(Macnn),
    MicroAttention(MicroAttention),
}

/// One of the Table 2 baselines, with its weights.
///
/// Tensor names equal the reference state_dict keys (`cnn1.conv1.weight`,
/// `stream2.conv.bias`, `icpt1.0.path1.2.weight`, `res_vgg.3.botneck.weight`,
/// `ma.0.convl_1.1.running_mean`, `dense.0.weight`, ...), in the reference's order.
#[derive(Debug, Clone)]
pub struct BaselineNet {
    kind: Baseline,
    inner: Inner,
    state: StateDict,
    dtype: DType,
    device: Device,
    /// Where training-mode dropout masks come from (shared by clones).
    dropout_rng: Arc<Mutex<DropoutRng>>,
}

impl BaselineNet {
    /// Builds `kind` from `vb`, whose paths are the reference state_dict keys.
    ///
    /// With a `VarMap`-backed builder the parameters are fresh trainable variables (PyTorch's
    /// default initialisation; BatchNorm statistics 0 / 1); with a checkpoint-backed builder
    /// everything is read from it (read-only).
    pub fn new(kind: Baseline, vb: VarBuilder) -> Result<Self> {
        let ctx = Ctx::new(vb);
        let (dtype, device) = (ctx.dtype(), ctx.device().clone());
        let inner = match kind {
            Baseline::OffApexNet => Inner::OffApexNet(OffApexNet::new(&ctx)?),
            Baseline::Ststnet => Inner::Ststnet(Ststnet::new(&ctx)?),
            Baseline::DualInception => Inner::DualInception(DualInception::new(&ctx)?),
            Baseline::Macnn => Inner::Macnn(Macnn::new(&ctx)?),
            Baseline::MicroAttention => Inner::MicroAttention(MicroAttention::new(&ctx)?),
        };
        Ok(Self {
            kind,
            inner,
            state: StateDict::new(
                ctx.reg.entries(),
                dtype,
                device.clone(),
                kind.display_name(),
            ),
            dtype,
            device,
            dropout_rng: Arc::default(),
        })
    }

    /// Makes training-mode dropout deterministic: from now on its masks are drawn from a
    /// counter-based generator keyed by `seed` and by the number of dropout layers applied
    /// since this call. Without it, masks come from candle's unseeded generator. Clones of
    /// the network share the generator. (STSTNet and Dual-Inception have no dropout.)
    pub fn seed_dropout(&self, seed: u64) {
        *self.dropout_rng.lock().unwrap_or_else(|e| e.into_inner()) = DropoutRng {
            seed: Some(seed),
            calls: 0,
        };
    }

    /// A network with fresh random weights (f32, PyTorch's default initialisation), trainable.
    pub fn random(kind: Baseline, device: &Device) -> Result<Self> {
        Self::random_with_dtype(kind, DType::F32, device)
    }

    /// A network with fresh random weights of `dtype`, trainable.
    pub fn random_with_dtype(kind: Baseline, dtype: DType, device: &Device) -> Result<Self> {
        let varmap = VarMap::new();
        Self::new(kind, VarBuilder::from_varmap(&varmap, dtype, device))
    }

    /// A trainable f32 network with the weights of a `.pth` (PyTorch zip pickle of a
    /// state_dict) or `.safetensors` file; see [`BaselineNet::load_file`].
    pub fn load(kind: Baseline, path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let net = Self::random(kind, device)?;
        net.load_file(path)?;
        Ok(net)
    }

    /// A trainable f32 network with the formula weights of the reference outputs
    /// ([`formula`]), generated entry by entry straight into the model's tensors.
    pub fn with_formula_weights(kind: Baseline, device: &Device) -> Result<Self> {
        let net = Self::random(kind, device)?;
        net.set_formula_weights()?;
        Ok(net)
    }

    /// Which baseline this is.
    pub fn kind(&self) -> Baseline {
        self.kind
    }

    /// The device of the weights.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The float type of the weights.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Checks that `x` is `[N, C, S, S]` with the model's `(C, S)` and `N > 0`.
    pub fn check_input(&self, x: &Tensor) -> Result<()> {
        let (c, s) = self.kind.input_shape();
        let d = x.dims();
        if d.len() != 4 || d[0] == 0 || d[1] != c || d[2] != s || d[3] != s {
            return Err(Error::InputShape {
                expected: format!("[N, {c}, {s}, {s}] ({})", self.kind.display_name()),
                found: d.to_vec(),
            });
        }
        Ok(())
    }

    /// Logits `[N, 3]` of `x` `[N, C, S, S]`; `train` selects active dropout and (for
    /// Micro-Attention) BatchNorm on batch statistics with the running-statistics update.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_impl(
            x,
            Fwd {
                train,
                stages: None,
                rng: Some(&self.dropout_rng),
            },
        )
    }

    /// Evaluation-mode logits plus the stage outputs (see [`Stages`]).
    pub fn forward_with_stages(&self, x: &Tensor) -> Result<(Tensor, Stages)> {
        let mut stages = Stages::new();
        let y = self.forward_impl(
            x,
            Fwd {
                train: false,
                stages: Some(&mut stages),
                rng: None,
            },
        )?;
        Ok((y, stages))
    }

    fn forward_impl(&self, x: &Tensor, mut f: Fwd) -> Result<Tensor> {
        self.check_input(x)?;
        crate::kernels::tune_allocator();
        let x = if x.dtype() != self.dtype {
            x.to_dtype(self.dtype)?
        } else {
            x.contiguous()?
        };
        match &self.inner {
            Inner::OffApexNet(m) => m.forward(&x, &mut f),
            Inner::Ststnet(m) => m.forward(&x, &mut f),
            Inner::DualInception(m) => m.forward(&x, &mut f),
            Inner::Macnn(m) => m.forward(&x, &mut f),
            Inner::MicroAttention(m) => m.forward(&x, &mut f),
        }
    }

    /// Trainable parameters (state_dict name, tensor), in state_dict order.
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.state.named_parameters()
    }

    /// The trainable variables (empty for a network built from a read-only checkpoint
    /// builder). BatchNorm running statistics are not among them.
    pub fn trainable_vars(&self) -> Vec<Var> {
        self.state.trainable_vars()
    }

    /// Number of trainable parameter values (see [`Baseline::expected_params`]).
    pub fn num_params(&self) -> usize {
        self.state.num_params()
    }

    /// The state dict as the reference stores it, in its order: parameters, and per
    /// BatchNorm `running_mean`, `running_var` and an i64 scalar `num_batches_tracked`.
    pub fn state_dict(&self) -> Result<Vec<(String, Tensor)>> {
        self.state.state_dict()
    }

    /// Replaces all weights and BatchNorm statistics with `tensors` (state_dict names).
    ///
    /// Every expected tensor must be present with its shape; `num_batches_tracked` is
    /// optional; unexpected keys are logged and ignored. `source` names the origin in errors.
    pub fn load_state_dict(&self, tensors: &HashMap<String, Tensor>, source: &str) -> Result<()> {
        self.state.load_state_dict(tensors, source)
    }

    /// Loads weights from a `.pth` (PyTorch zip pickle holding a state_dict) or a
    /// `.safetensors` file, chosen by extension.
    pub fn load_file(&self, path: impl AsRef<Path>) -> Result<()> {
        self.state.load_file(path)
    }

    /// Saves the state dict (BatchNorm statistics included, `num_batches_tracked` as i64)
    /// to a safetensors file.
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<()> {
        self.state.save_safetensors(path)
    }

    /// (name, shape) of every state-dict entry in order, with whether it is a BatchNorm
    /// entry (`weight`, `bias`, running statistics, `num_batches_tracked`; shape `[]`).
    pub(crate) fn state_dict_layout(&self) -> Vec<(String, Vec<usize>, bool)> {
        self.state.layout()
    }

    /// Sets one state-dict entry (a trainable parameter or a BatchNorm buffer) by name.
    pub(crate) fn set_entry(&self, key: &str, value: &Tensor) -> Result<()> {
        self.state.set_entry(key, value)
    }

    /// Replaces every state-dict entry with its formula value ([`formula`]), one entry at a
    /// time (no second copy of the whole model).
    pub fn set_formula_weights(&self) -> Result<()> {
        for (k, (name, shape, is_bn)) in self.state_dict_layout().into_iter().enumerate() {
            let kind = formula::Kind::of(&name, &shape, is_bn);
            let t = formula::tensor(k as u64, &shape, kind, &self.device)?;
            self.set_entry(&name, &t)?;
        }
        Ok(())
    }

    /// torchstat 0.0.7's per-layer table (batch 1): Params, Flops, MemR+W.
    pub fn summary(&self) -> TorchstatSummary {
        summary::summarize(self.kind)
    }
}

#[cfg(test)]
mod tests;
