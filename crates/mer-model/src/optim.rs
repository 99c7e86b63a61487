//! Fused in-place optimiser updates for f32 parameters on the CPU.
//!
//! candle's `AdamW` builds each update from a dozen tensor operations, each allocating and
//! writing a new tensor the size of the parameter: for MACNN's 70.6 million parameters that
//! is gigabytes of memory traffic per step. Here each parameter is updated in one pass, in
//! place (candle's `InplaceOp2`), with its moments in plain vectors, split across the rayon
//! pool in fixed chunks. The arithmetic is candle's, operation for operation in f32 (each
//! `tensor * c` of candle is `x * c + 0`), so the weights are bit for bit those of
//! `candle_nn::AdamW` (tested), on any number of threads.

use candle_core::{CpuStorage, DType, Device, InplaceOp2, Layout, Tensor, Var};
use rayon::prelude::*;
use std::sync::Mutex;

use crate::{AdamConfig, Error, Result, SgdConfig};

/// Elements per parallel chunk (a function of nothing but the parameter's size).
const CHUNK: usize = 1 << 15;

/// Whether the fused path applies to these variables (f32 on the CPU).
pub(crate) fn fusable(vars: &[Var]) -> bool {
    vars.iter()
        .all(|v| v.dtype() == DType::F32 && matches!(v.device(), Device::Cpu))
}

/// The per-element update of one optimiser step, given its constants.
#[derive(Clone, Copy)]
enum Rule {
    Adam {
        b1: f32,
        omb1: f32,
        b2: f32,
        omb2: f32,
        scale_m: f32,
        scale_v: f32,
        eps: f32,
        lr: f32,
    },
    Sgd {
        lr: f32,
        momentum: f32,
        weight_decay: f32,
        first: bool,
    },
}

/// One parameter's update: the parameter is the in-place operand, the gradient the second.
struct Step<'a> {
    rule: Rule,
    /// Adam: first and second moments; SGD: the momentum buffer (and an unused empty one).
    state: &'a Mutex<(Vec<f32>, Vec<f32>)>,
}

fn contiguous<'a>(v: &'a [f32], l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("fused optimiser: the {what} is not contiguous"),
    }
}

impl InplaceOp2 for Step<'_> {
    fn name(&self) -> &'static str {
        "fused-optimiser-step"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(w), CpuStorage::F32(g)) = (s1, s2) else {
            candle_core::bail!("fused optimiser: expected f32 parameter and gradient");
        };
        let Some((a, b)) = l1.contiguous_offsets() else {
            candle_core::bail!("fused optimiser: the parameter is not contiguous");
        };
        let w = &mut w[a..b];
        let g = contiguous(g, l2, "gradient")?;
        if g.len() != w.len() {
            candle_core::bail!(
                "fused optimiser: gradient of {} values for {}",
                g.len(),
                w.len()
            );
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (s_a, s_b) = &mut *state;
        let z = 0f32;
        match self.rule {
            Rule::Adam {
                b1,
                omb1,
                b2,
                omb2,
                scale_m,
                scale_v,
                eps,
                lr,
            } => {
                w.par_chunks_mut(CHUNK)
                    .zip(s_a.par_chunks_mut(CHUNK))
                    .zip(s_b.par_chunks_mut(CHUNK))
                    .zip(g.par_chunks(CHUNK))
                    .for_each(|(((w, m), v), g)| {
                        for i in 0..w.len() {
                            let gi = g[i];
                            // candle: m * b1 + g * (1 - b1); v * b2 + g^2 * (1 - b2).
                            let nm = (m[i] * b1 + z) + (gi * omb1 + z);
                            let nv = (v[i] * b2 + z) + ((gi * gi) * omb2 + z);
                            let mh = nm * scale_m + z;
                            let vh = nv * scale_v + z;
                            // theta * (1 - lr * 0), then minus lr * m_hat / (sqrt(v_hat) + eps).
                            let nt = w[i] * 1.0 + z;
                            let adj = mh / (vh.sqrt() * 1.0 + eps);
                            w[i] = nt - (adj * lr + z);
                            m[i] = nm;
                            v[i] = nv;
                        }
                    });
            }
            Rule::Sgd {
                lr,
                momentum,
                weight_decay,
                first,
            } => {
                w.par_chunks_mut(CHUNK)
                    .zip(s_a.par_chunks_mut(CHUNK))
                    .zip(g.par_chunks(CHUNK))
                    .for_each(|((w, buf), g)| {
                        for i in 0..w.len() {
                            let gi = g[i] + (w[i] * weight_decay + z);
                            let b = if first || momentum == 0.0 {
                                gi
                            } else {
                                (buf[i] * momentum + z) + gi
                            };
                            w[i] -= b * lr + z;
                            buf[i] = b;
                        }
                    });
            }
        }
        Ok(())
    }
}

/// Adam or SGD over f32 CPU variables, fused (see the module documentation).
pub(crate) struct Fused {
    vars: Vec<Var>,
    state: Vec<Mutex<(Vec<f32>, Vec<f32>)>>,
    kind: FusedKind,
    step_t: u64,
}

#[derive(Clone, Copy)]
pub(crate) enum FusedKind {
    Adam(AdamConfig),
    Sgd(SgdConfig),
}

impl Fused {
    pub(crate) fn new(vars: Vec<Var>, kind: FusedKind) -> Self {
        let state = vars
            .iter()
            .map(|v| {
                let n = v.elem_count();
                let second = if matches!(kind, FusedKind::Adam(_)) {
                    n
                } else {
                    0
                };
                Mutex::new((vec![0f32; n], vec![0f32; second]))
            })
            .collect();
        Self {
            vars,
            state,
            kind,
            step_t: 0,
        }
    }

    pub(crate) fn lr(&self) -> f64 {
        match self.kind {
            FusedKind::Adam(c) => c.lr,
            FusedKind::Sgd(c) => c.lr,
        }
    }

    pub(crate) fn set_lr(&mut self, lr: f64) {
        match &mut self.kind {
            FusedKind::Adam(c) => c.lr = lr,
            FusedKind::Sgd(c) => c.lr = lr,
        }
    }

    /// Backward pass of `loss` and one update of every variable with a gradient.
    pub(crate) fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step_t += 1;
        let rule = match self.kind {
            FusedKind::Adam(c) => Rule::Adam {
                b1: c.beta1 as f32,
                omb1: (1.0 - c.beta1) as f32,
                b2: c.beta2 as f32,
                omb2: (1.0 - c.beta2) as f32,
                scale_m: (1.0 / (1.0 - c.beta1.powi(self.step_t as i32))) as f32,
                scale_v: (1.0 / (1.0 - c.beta2.powi(self.step_t as i32))) as f32,
                eps: c.eps as f32,
                lr: c.lr as f32,
            },
            FusedKind::Sgd(c) => Rule::Sgd {
                lr: c.lr as f32,
                momentum: c.momentum as f32,
                weight_decay: c.weight_decay as f32,
                first: self.step_t == 1,
            },
        };
        for (var, state) in self.vars.iter().zip(&self.state) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = g.contiguous()?;
            var.as_tensor()
                .inplace_op2(&g, &Step { rule, state })
                .map_err(Error::from)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::{AdamW, Optimizer, ParamsAdamW};

    /// The fused Adam gives candle's AdamW weights bit for bit, on 1 and 2 threads, over
    /// steps with a changing learning rate (and a parameter larger than one chunk).
    #[test]
    fn fused_adam_equals_candle_adamw_bit_for_bit() {
        let dev = Device::Cpu;
        let shapes = [vec![3usize, 5], vec![CHUNK + 17], vec![7]];
        let init: Vec<Tensor> = shapes
            .iter()
            .map(|s| Tensor::randn(0f32, 1.0, s.as_slice(), &dev).unwrap())
            .collect();
        let xs: Vec<Tensor> = shapes
            .iter()
            .map(|s| Tensor::randn(0f32, 1.0, s.as_slice(), &dev).unwrap())
            .collect();
        let loss_of = |vars: &[Var]| {
            let mut l = Tensor::new(0f32, &dev).unwrap();
            for (v, x) in vars.iter().zip(&xs) {
                // A non-linear loss, so that the gradients change from step to step.
                let t = (v.as_tensor() * x).unwrap();
                l = (l + (t.sqr().unwrap() + t).unwrap().sum_all().unwrap()).unwrap();
            }
            l
        };
        let cfg = AdamConfig::default();
        let fresh = || -> Vec<Var> {
            init.iter()
                .map(|t| Var::from_tensor(&t.copy().unwrap()).unwrap())
                .collect()
        };
        let reference = {
            let vars = fresh();
            let mut opt = AdamW::new(
                vars.clone(),
                ParamsAdamW {
                    lr: cfg.lr,
                    beta1: cfg.beta1,
                    beta2: cfg.beta2,
                    eps: cfg.eps,
                    weight_decay: 0.0,
                },
            )
            .unwrap();
            for step in 0..5 {
                opt.set_learning_rate(1e-3 * 0.3f64.powi(step / 2));
                opt.backward_step(&loss_of(&vars)).unwrap();
            }
            vars
        };
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let vars = fresh();
            let mut opt = Fused::new(vars.clone(), FusedKind::Adam(cfg));
            pool.install(|| {
                for step in 0..5 {
                    opt.set_lr(1e-3 * 0.3f64.powi(step / 2));
                    opt.backward_step(&loss_of(&vars)).unwrap();
                }
            });
            for (a, b) in vars.iter().zip(&reference) {
                let a: Vec<u32> = a
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect();
                let b: Vec<u32> = b
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect();
                assert!(
                    a == b,
                    "{threads} thread(s): fused Adam differs from candle's AdamW"
                );
            }
        }
    }
}
