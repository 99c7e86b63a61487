//! One training step: cross-entropy and Adam with the reference's settings.

use candle_core::{DType, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

use crate::{Error, OffTaNet, Result};

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

/// A model and its optimizer state: `step` runs one training-mode forward, cross-entropy,
/// backward and Adam update over the trainable parameters (BatchNorm statistics are updated
/// by the forward, not by the optimizer).
pub struct Trainer {
    model: OffTaNet,
    opt: AdamW,
}

impl Trainer {
    /// A trainer with the reference's Adam settings.
    pub fn new(model: OffTaNet) -> Result<Self> {
        Self::with_config(model, AdamConfig::default())
    }

    /// A trainer with the given Adam settings.
    pub fn with_config(model: OffTaNet, cfg: AdamConfig) -> Result<Self> {
        crate::kernels::tune_allocator();
        let vars = model.trainable_vars();
        if vars.is_empty() {
            return Err(Error::Config(
                "trainer: expected a network with trainable variables (built on a VarMap), found none".into(),
            ));
        }
        // AdamW with zero weight decay is Adam (candle's update equals PyTorch's).
        let params = ParamsAdamW {
            lr: cfg.lr,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            weight_decay: 0.0,
        };
        Ok(Self {
            model,
            opt: AdamW::new(vars, params)?,
        })
    }

    /// One step on a batch `x` `[N, C, 112, 112]` with class indices `labels` `[N]` (u32 or
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
        self.opt.backward_step(&loss)?;
        Ok(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?)
    }

    /// Sets the learning rate (for step decay).
    pub fn set_lr(&mut self, lr: f64) {
        self.opt.set_learning_rate(lr);
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.opt.learning_rate()
    }

    /// The model being trained.
    pub fn model(&self) -> &OffTaNet {
        &self.model
    }

    /// The trained model.
    pub fn into_model(self) -> OffTaNet {
        self.model
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;
    use crate::{ModelConfig, Variant};

    fn accuracy(model: &OffTaNet, x: &Tensor, labels: &[u32]) -> f32 {
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
