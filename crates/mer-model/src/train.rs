//! One training step: cross-entropy and the reference's optimisers (Adam, or SGD with
//! momentum and weight decay for Micro-Attention).

use candle_core::{DType, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

use crate::{Error, Net, Result};

/// Adam hyper-parameters (the reference's: lr 1e-3, betas 0.9 / 0.999, eps 1e-8, no weight
/// decay).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// PyTorch's `torch.optim.SGD` with momentum and L2 weight decay (no dampening, not
/// Nesterov): `g += weight_decay * w; b = momentum * b + g` (`b = g` on the first step);
/// `w -= lr * b`. The decay applies to every parameter, biases and BatchNorm affine included.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f64,
    /// Momentum.
    pub momentum: f64,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f64,
}

/// The optimiser of a training run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerConfig {
    /// Adam.
    Adam(AdamConfig),
    /// SGD with momentum and weight decay.
    Sgd(SgdConfig),
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig::Adam(AdamConfig::default())
    }
}

impl From<AdamConfig> for OptimizerConfig {
    fn from(c: AdamConfig) -> Self {
        OptimizerConfig::Adam(c)
    }
}

impl From<SgdConfig> for OptimizerConfig {
    fn from(c: SgdConfig) -> Self {
        OptimizerConfig::Sgd(c)
    }
}

/// SGD's state: the variables and their momentum buffers (created on the first step).
struct Sgd {
    vars: Vec<Var>,
    buffers: Vec<Option<Tensor>>,
    cfg: SgdConfig,
}

impl Sgd {
    fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        for (var, buf) in self.vars.iter().zip(self.buffers.iter_mut()) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = if self.cfg.weight_decay != 0.0 {
                (g + var.as_tensor().affine(self.cfg.weight_decay, 0.0)?)?
            } else {
                g.clone()
            };
            let b = match buf.take() {
                Some(b) if self.cfg.momentum != 0.0 => (b.affine(self.cfg.momentum, 0.0)? + g)?,
                _ => g,
            };
            var.set(&(var.as_tensor() - b.affine(self.cfg.lr, 0.0)?)?)?;
            *buf = Some(b);
        }
        Ok(())
    }
}

enum Opt {
    Adam(AdamW),
    Sgd(Sgd),
    /// Adam or SGD fused in place (f32 on the CPU; the same bits as the two above).
    Fused(crate::optim::Fused),
}

/// A model and its optimizer state: `step` runs one training-mode forward, cross-entropy,
/// backward and optimizer update over the trainable parameters (BatchNorm statistics are
/// updated by the forward, not by the optimizer).
pub struct Trainer {
    model: Net,
    opt: Opt,
}

impl Trainer {
    /// A trainer with the reference's Adam settings.
    pub fn new(model: impl Into<Net>) -> Result<Self> {
        Self::with_config(model, AdamConfig::default())
    }

    /// A trainer with the given optimiser settings ([`AdamConfig`] or [`SgdConfig`]).
    pub fn with_config(model: impl Into<Net>, cfg: impl Into<OptimizerConfig>) -> Result<Self> {
        crate::kernels::tune_allocator();
        let model = model.into();
        let vars = model.trainable_vars();
        if vars.is_empty() {
            return Err(Error::Config(
                "trainer: expected a network with trainable variables (built on a VarMap), found none".into(),
            ));
        }
        let cfg = cfg.into();
        if crate::optim::fusable(&vars) {
            let kind = match cfg {
                OptimizerConfig::Adam(c) => crate::optim::FusedKind::Adam(c),
                OptimizerConfig::Sgd(c) => crate::optim::FusedKind::Sgd(c),
            };
            return Ok(Self {
                model,
                opt: Opt::Fused(crate::optim::Fused::new(vars, kind)),
            });
        }
        let opt = match cfg {
            // AdamW with zero weight decay is Adam (candle's update equals PyTorch's).
            OptimizerConfig::Adam(cfg) => Opt::Adam(AdamW::new(
                vars,
                ParamsAdamW {
                    lr: cfg.lr,
                    beta1: cfg.beta1,
                    beta2: cfg.beta2,
                    eps: cfg.eps,
                    weight_decay: 0.0,
                },
            )?),
            OptimizerConfig::Sgd(cfg) => Opt::Sgd(Sgd {
                buffers: vec![None; vars.len()],
                vars,
                cfg,
            }),
        };
        Ok(Self { model, opt })
    }

    /// One step on a batch `x` `[N, C, S, S]` with class indices `labels` `[N]` (u32 or
    /// i64); returns the mean cross-entropy before the update.
    pub fn step(&mut self, x: &Tensor, labels: &Tensor) -> Result<f32> {
        let n = x.dims().first().copied().unwrap_or(0);
        if labels.dims() != [n] || !matches!(labels.dtype(), DType::U32 | DType::I64) {
            return Err(Error::InputShape {
                expected: format!("labels [{n}] of u32 or i64 (dtype {:?})", labels.dtype()),
                found: labels.dims().to_vec(),
            });
        }
        let logits = self.model.forward_t(x, true)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &labels.to_device(x.device())?)?;
        match &mut self.opt {
            Opt::Adam(o) => o.backward_step(&loss)?,
            Opt::Sgd(o) => o.backward_step(&loss)?,
            Opt::Fused(o) => o.backward_step(&loss)?,
        }
        Ok(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?)
    }

    /// Sets the learning rate (for step decay).
    pub fn set_lr(&mut self, lr: f64) {
        match &mut self.opt {
            Opt::Adam(o) => o.set_learning_rate(lr),
            Opt::Sgd(o) => o.cfg.lr = lr,
            Opt::Fused(o) => o.set_lr(lr),
        }
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        match &self.opt {
            Opt::Adam(o) => o.learning_rate(),
            Opt::Sgd(o) => o.cfg.lr,
            Opt::Fused(o) => o.lr(),
        }
    }

    /// The model being trained.
    pub fn model(&self) -> &Net {
        &self.model
    }

    /// The trained model.
    pub fn into_model(self) -> Net {
        self.model
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};

    use super::*;
    use crate::{ModelConfig, OffTaNet, Variant};

    fn accuracy(model: &Net, x: &Tensor, labels: &[u32]) -> f32 {
        let pred = model
            .forward_t(x, false)
            .unwrap()
            .argmax(1)
            .unwrap()
            .to_vec1::<u32>()
            .unwrap();
        pred.iter().zip(labels).filter(|(p, l)| p == l).count() as f32 / labels.len() as f32
    }

    /// A handful of random samples with arbitrary labels: the reference settings (Adam 1e-3,
    /// dropout 0.5, batch statistics) must fit them to 100% training accuracy (evaluation
    /// mode, running statistics) and lower the loss.
    #[test]
    fn overfits_a_handful_of_samples() {
        let dev = Device::Cpu;
        let labels: Vec<u32> = vec![0, 1, 2, 0, 1, 2];
        let x = Tensor::randn(0f32, 1.0, (labels.len(), 3, 112, 112), &dev).unwrap();
        let y = Tensor::new(labels.as_slice(), &dev).unwrap();
        let model = OffTaNet::random(&ModelConfig::new(Variant::Ta), &dev).unwrap();
        let mut trainer = Trainer::new(model).unwrap();
        let first = trainer.step(&x, &y).unwrap();
        let mut last = first;
        let mut steps = 1;
        while steps < 200 {
            last = trainer.step(&x, &y).unwrap();
            steps += 1;
            if steps % 10 == 0
                && accuracy(trainer.model(), &x, &labels) == 1.0
                && last < 0.5 * first
            {
                break;
            }
        }
        let acc = accuracy(trainer.model(), &x, &labels);
        eprintln!("overfit: {steps} steps, loss {first:.4} -> {last:.4}, training accuracy {acc}");
        assert_eq!(acc, 1.0, "after {steps} steps, loss {first} -> {last}");
        assert!(last < 0.5 * first, "loss {first} -> {last}");
    }

    /// SGD's update against PyTorch's formulas, step by step: loss = sum(w * x), so the
    /// gradient is x; b1 = x + wd w0, w1 = w0 - lr b1; b2 = mu b1 + x + wd w1, w2 = w1 - lr b2.
    #[test]
    fn sgd_follows_pytorch_momentum_and_weight_decay() {
        let dev = Device::Cpu;
        let w0 = [0.5f64, -1.0, 2.0];
        let x = [1.0f64, 3.0, -2.0];
        let var = Var::from_vec(w0.to_vec(), 3, &dev).unwrap();
        let xt = Tensor::new(&x, &dev).unwrap();
        let cfg = SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.05,
        };
        let mut sgd = Sgd {
            vars: vec![var.clone()],
            buffers: vec![None],
            cfg,
        };
        let (mut w, mut b) = (w0, [0f64; 3]);
        for step in 0..3 {
            let loss = (var.as_tensor() * &xt).unwrap().sum_all().unwrap();
            sgd.backward_step(&loss).unwrap();
            for i in 0..3 {
                let g = x[i] + cfg.weight_decay * w[i];
                b[i] = if step == 0 {
                    g
                } else {
                    cfg.momentum * b[i] + g
                };
                w[i] -= cfg.lr * b[i];
            }
            let got = var.as_tensor().to_vec1::<f64>().unwrap();
            for i in 0..3 {
                assert!(
                    (got[i] - w[i]).abs() < 1e-12,
                    "step {step}: {got:?} vs {w:?}"
                );
            }
        }
    }

    /// The fused SGD (f32) equals the tensor-op SGD above bit for bit.
    #[test]
    fn fused_sgd_equals_the_tensor_sgd() {
        let dev = Device::Cpu;
        let init = Tensor::randn(0f32, 1.0, 40_000, &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, 40_000, &dev).unwrap();
        let cfg = SgdConfig {
            lr: 1e-2,
            momentum: 0.9,
            weight_decay: 5e-4,
        };
        let run = |fused: bool| {
            let var = Var::from_tensor(&init.copy().unwrap()).unwrap();
            let mut tensor_sgd = Sgd {
                vars: vec![var.clone()],
                buffers: vec![None],
                cfg,
            };
            let mut fused_sgd =
                crate::optim::Fused::new(vec![var.clone()], crate::optim::FusedKind::Sgd(cfg));
            for _ in 0..4 {
                let t = (var.as_tensor() * &x).unwrap();
                let loss = (t.sqr().unwrap() + t).unwrap().sum_all().unwrap();
                if fused {
                    fused_sgd.backward_step(&loss).unwrap();
                } else {
                    tensor_sgd.backward_step(&loss).unwrap();
                }
            }
            var.as_tensor()
                .to_vec1::<f32>()
                .unwrap()
                .into_iter()
                .map(f32::to_bits)
                .collect::<Vec<_>>()
        };
        assert!(run(true) == run(false));
    }

    #[test]
    fn learning_rate_and_label_checks() {
        let dev = Device::Cpu;
        let model = OffTaNet::random(&ModelConfig::default(), &dev).unwrap();
        let mut t = Trainer::new(model).unwrap();
        assert_eq!(t.lr(), 1e-3);
        t.set_lr(3e-4);
        assert_eq!(t.lr(), 3e-4);
        let x = Tensor::zeros((2, 3, 112, 112), DType::F32, &dev).unwrap();
        for labels in [
            Tensor::new(&[0u32, 1, 2], &dev).unwrap(),
            Tensor::new(&[0f32, 1.0], &dev).unwrap(),
        ] {
            let err = t.step(&x, &labels).unwrap_err().to_string();
            assert!(err.contains("expected shape labels [2]"), "{err}");
        }
    }
}
