//! The network: stem, three residual stages, dense head; weights in and out.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use crate::blocks::{Block, BlockTaps, BotBlock, EnhancedBlock, EnhancedSpec, Residual};
use crate::layers::{relu, relu_summary, BatchNorm2d, Conv2d, Ctx, Linear};
use crate::state::StateDict;
use crate::summary::{Summary, SummaryRow};
use crate::{Error, ModelConfig, Result, Variant, INPUT_SIZE};

/// Intermediate tensors of one forward pass (evaluation mode), for the paper's Fig. 5 and
/// Table 5 and for locating mismatches against the reference layer by layer. The attention
/// fields belong to the last block; a field is `None` when the variant lacks that part.
#[derive(Debug, Clone, Default)]
pub struct Taps {
    /// After the stem (conv, ReLU, BN): `[N, 8, 56, 56]`.
    pub stem: Option<Tensor>,
    /// After the first residual stage: `[N, 18, 28, 28]`.
    pub res1: Option<Tensor>,
    /// After the second residual stage: `[N, 28, 14, 14]`.
    pub res2: Option<Tensor>,
    /// Last block, after its first conv + BN + ReLU: `[N, 28, 14, 14]`.
    pub last_conv1: Option<Tensor>,
    /// Channel-attention weights (after the sigmoid): `[N, 28, 1, 1]`.
    pub channel_attention: Option<Tensor>,
    /// Spatial-attention map (after the sigmoid): `[N, 1, 14, 14]`.
    pub spatial_attention: Option<Tensor>,
    /// Multi-head self-attention output: `[N, 28, 14, 14]` (`[N, 8, 14, 14]` for sa and bot).
    pub self_attention: Option<Tensor>,
    /// The softmax attention maps of every head channel, concatenated: `[N, 28, 14, 14]`.
    pub self_attention_maps: Option<Tensor>,
    /// Last block, after its second conv + BN + ReLU: `[N, 8, 14, 14]`.
    pub last_conv2: Option<Tensor>,
    /// After the last block: `[N, 8, 7, 7]`.
    pub last_block: Option<Tensor>,
}

/// Off-TANet or one of its ablation variants.
///
/// Tensor names equal the reference PyTorch state_dict keys (`conv1.0.weight`,
/// `res1.conv.1.running_mean`, `eres.sa.sa_blocks.0.w_q.bias`, `dense.6.weight`, ...).
/// Variants absent from the reference code keep its naming scheme: the last block is always
/// `eres`; `res` uses the residual names under it, `bot` has `eres.sa1` and `eres.sa2`;
/// `all-ta` has enhanced blocks named `res1`, `res2`, `eres`.
#[derive(Debug, Clone)]
pub struct OffTaNet {
    cfg: ModelConfig,
    stem_conv: Conv2d,
    stem_bn: BatchNorm2d,
    blocks: Vec<Block>,
    dense: [Linear; 3],
    state: StateDict,
    dtype: DType,
    device: Device,
    /// Where training-mode dropout masks come from (see [`OffTaNet::seed_dropout`]).
    dropout_rng: Arc<Mutex<DropoutRng>>,
}

/// The dropout masks' source: candle's generator (unseeded) or a counter-based one.
#[derive(Debug, Default, Clone, Copy)]
struct DropoutRng {
    /// `None`: candle's own dropout (its CPU generator cannot be seeded).
    seed: Option<u64>,
    /// Dropout layers applied so far since seeding (the stream of the next mask).
    calls: u64,
}

/// Uniform in `[0, 1)` for element `i` of mask `call` under `seed` (24 random bits, as an
/// f32 uniform has): a function of its arguments only, so masks do not depend on threads.
fn dropout_uniform(seed: u64, call: u64, i: u64) -> f32 {
    use mer_common::rng::mix64;
    let key = mix64(seed ^ mix64(call.wrapping_add(0x9E37_79B9_7F4A_7C15)));
    (mix64(key.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))) >> 40) as f32
        / (1u64 << 24) as f32
}

const TA: EnhancedSpec = EnhancedSpec {
    cbam: true,
    mhsa: true,
    conv2: true,
};

impl OffTaNet {
    /// Builds the network from `vb`, whose paths are the reference state_dict keys.
    ///
    /// With a `VarMap`-backed builder the parameters are fresh trainable variables (PyTorch's
    /// default initialisation) and the BatchNorm statistics start at 0 / 1; with a checkpoint
    /// backed builder (`VarBuilder::from_pth`, safetensors) everything is read from it.
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let ctx = Ctx::new(vb);
        let (dtype, device) = (ctx.dtype(), ctx.device().clone());
        let stem = ctx.pp("conv1");
        let stem_conv = Conv2d::new(&stem.pp(0), cfg.in_channels, 8, 7, 2, 3, true)?;
        let stem_bn = BatchNorm2d::new(&stem.pp(2), 8)?;
        let (res1, res2) = match cfg.variant {
            Variant::AllTa => (
                Block::Enhanced(EnhancedBlock::new(&ctx.pp("res1"), 8, 18, 56, TA)?),
                Block::Enhanced(EnhancedBlock::new(&ctx.pp("res2"), 18, 28, 28, TA)?),
            ),
            _ => (
                Block::Residual(Residual::new(&ctx.pp("res1"), 8, 18)?),
                Block::Residual(Residual::new(&ctx.pp("res2"), 18, 28)?),
            ),
        };
        let e = ctx.pp("eres");
        let last = match cfg.variant {
            Variant::Res => Block::Residual(Residual::new(&e, 28, 8)?),
            Variant::Cbam => Block::Enhanced(EnhancedBlock::new(
                &e,
                28,
                8,
                14,
                EnhancedSpec {
                    cbam: true,
                    mhsa: false,
                    conv2: true,
                },
            )?),
            Variant::Sa => Block::Enhanced(EnhancedBlock::new(
                &e,
                28,
                8,
                14,
                EnhancedSpec {
                    cbam: false,
                    mhsa: true,
                    conv2: false,
                },
            )?),
            Variant::Bot => Block::Bot(BotBlock::new(&e, 28, 8, 14)?),
            Variant::Ta | Variant::AllTa => Block::Enhanced(EnhancedBlock::new(&e, 28, 8, 14, TA)?),
        };
        let d = ctx.pp("dense");
        let dense = [
            Linear::new(&d.pp(0), 8 * 7 * 7, 64)?,
            Linear::new(&d.pp(3), 64, 64)?,
            Linear::new(&d.pp(6), 64, cfg.num_classes)?,
        ];
        let state = StateDict::new(ctx.reg.entries(), dtype, device.clone(), "Off-TANet");
        Ok(Self {
            cfg: *cfg,
            stem_conv,
            stem_bn,
            blocks: vec![res1, res2, last],
            dense,
            state,
            dtype,
            device,
            dropout_rng: Arc::default(),
        })
    }

    /// Makes training-mode dropout deterministic: from now on its masks are drawn from a
    /// counter-based generator keyed by `seed` and by the number of dropout layers applied
    /// since this call (PyTorch's semantics: an element is kept with probability `1 - p`
    /// and scaled by `1 / (1 - p)`). Without it, masks come from candle's unseeded
    /// generator. Clones of the network share the generator.
    pub fn seed_dropout(&self, seed: u64) {
        *self.dropout_rng.lock().unwrap_or_else(|e| e.into_inner()) = DropoutRng {
            seed: Some(seed),
            calls: 0,
        };
    }

    /// Training-mode dropout of `h` with probability `p`.
    fn dropout(&self, h: &Tensor, p: f32) -> Result<Tensor> {
        let (seed, call) = {
            let mut r = self.dropout_rng.lock().unwrap_or_else(|e| e.into_inner());
            let Some(seed) = r.seed else {
                drop(r);
                return Ok(candle_nn::ops::dropout(h, p)?);
            };
            r.calls += 1;
            (seed, r.calls - 1)
        };
        let scale = 1.0 / (1.0 - p);
        let mask: Vec<f32> = (0..h.elem_count() as u64)
            .map(|i| {
                if dropout_uniform(seed, call, i) >= p {
                    scale
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, h.shape(), h.device())?.to_dtype(h.dtype())?;
        Ok(h.mul(&mask)?)
    }

    /// A network with fresh random weights (f32), trainable.
    pub fn random(cfg: &ModelConfig, device: &Device) -> Result<Self> {
        Self::random_with_dtype(cfg, DType::F32, device)
    }

    /// A network with fresh random weights of `dtype` (f64 for gradient checks), trainable.
    pub fn random_with_dtype(cfg: &ModelConfig, dtype: DType, device: &Device) -> Result<Self> {
        let varmap = VarMap::new();
        Self::new(cfg, VarBuilder::from_varmap(&varmap, dtype, device))
    }

    /// A trainable f32 network with the weights of a `.pth` (PyTorch zip pickle of a
    /// state_dict) or `.safetensors` file; see [`OffTaNet::load_file`].
    pub fn load(cfg: &ModelConfig, path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let net = Self::random(cfg, device)?;
        net.load_file(path)?;
        Ok(net)
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The device of the weights.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The float type of the weights.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Logits `[N, num_classes]` of `x` `[N, in_channels, 112, 112]`; `train` selects batch
    /// statistics (and their running update) in BatchNorm and active dropout.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_impl(x, train, None)
    }

    /// Evaluation-mode logits plus the intermediate tensors.
    pub fn forward_with_taps(&self, x: &Tensor) -> Result<(Tensor, Taps)> {
        let mut taps = Taps::default();
        let y = self.forward_impl(x, false, Some(&mut taps))?;
        Ok((y, taps))
    }

    /// Checks that `x` is `[N, in_channels, 112, 112]`.
    pub fn check_input(&self, x: &Tensor) -> Result<()> {
        let d = x.dims();
        if d.len() != 4 || d[1] != self.cfg.in_channels || d[2] != INPUT_SIZE || d[3] != INPUT_SIZE
        {
            return Err(Error::InputShape {
                expected: format!("[N, {}, {INPUT_SIZE}, {INPUT_SIZE}]", self.cfg.in_channels),
                found: d.to_vec(),
            });
        }
        Ok(())
    }

    fn forward_impl(&self, x: &Tensor, train: bool, mut taps: Option<&mut Taps>) -> Result<Tensor> {
        self.check_input(x)?;
        crate::kernels::tune_allocator();
        let x = if x.dtype() != self.dtype {
            x.to_dtype(self.dtype)?
        } else {
            x.clone()
        };
        // conv -> ReLU -> BatchNorm (the reference's order); one fused op in training.
        let fused = if train {
            self.stem_bn
                .conv_bn_train(&self.stem_conv, &x, true, false)?
        } else {
            None
        };
        let mut h = match fused {
            Some(h) => h,
            None => self
                .stem_bn
                .forward_t(&self.stem_conv.forward_relu(&x)?, train)?,
        };
        if let Some(t) = taps.as_deref_mut() {
            t.stem = Some(h.clone());
        }
        let last = self.blocks.len() - 1;
        let mut block_taps = BlockTaps::default();
        for (i, b) in self.blocks.iter().enumerate() {
            let bt = if i == last && taps.is_some() {
                Some(&mut block_taps)
            } else {
                None
            };
            h = b.forward_t(&h, train, bt)?;
            if let Some(t) = taps.as_deref_mut() {
                match i {
                    0 => t.res1 = Some(h.clone()),
                    1 => t.res2 = Some(h.clone()),
                    _ => t.last_block = Some(h.clone()),
                }
            }
        }
        if let Some(t) = taps {
            t.last_conv1 = block_taps.conv1;
            t.channel_attention = block_taps.ca;
            t.spatial_attention = block_taps.spa;
            t.self_attention = block_taps.sa;
            t.self_attention_maps = block_taps.sa_maps;
            t.last_conv2 = block_taps.conv2;
        }
        let p = self.cfg.dropout;
        let mut h = h.flatten_from(1)?;
        for (i, l) in self.dense.iter().enumerate() {
            h = l.forward(&h)?;
            if i < 2 {
                h = relu(&h)?;
                if train && p > 0.0 {
                    h = self.dropout(&h, p)?;
                }
            }
        }
        Ok(h)
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

    /// Number of trainable parameter values (59,403 for `ta`).
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

    /// The per-layer table (output shape, parameters, multiply-adds).
    pub fn summary(&self) -> Summary {
        let mut rows: Vec<SummaryRow> = Vec::new();
        let x = [self.cfg.in_channels, INPUT_SIZE, INPUT_SIZE];
        let h = self.stem_conv.summarize(x, &mut rows);
        let h = relu_summary("conv1.1", h, &mut rows);
        let mut h = self.stem_bn.summarize(h, &mut rows);
        for b in &self.blocks {
            h = b.summarize(h, &mut rows);
        }
        for (i, l) in self.dense.iter().enumerate() {
            l.summarize(&mut rows);
            if i < 2 {
                let n = 64;
                rows.push(
                    SummaryRow::new_dims(
                        &format!("dense.{}", 3 * i + 1),
                        "ReLU",
                        vec![n],
                        0,
                        n as u64,
                    )
                    .with_flops(n as u64)
                    .with_mem(n as u64, n as u64),
                );
                rows.push(SummaryRow::new_dims(
                    &format!("dense.{}", 3 * i + 2),
                    "Dropout",
                    vec![n],
                    0,
                    0,
                ));
            }
        }
        Summary {
            variant: self.cfg.variant,
            input_shape: x.to_vec(),
            rows,
        }
    }
}

#[cfg(test)]
#[path = "net_tests.rs"]
mod tests;
