//! The building blocks: convolution, batch norm, linear, max pool, and the registry that
//! names every tensor after the reference state_dict.
//!
//! Each layer is a small type with a `forward`, so that faster implementations (custom CPU
//! ops with their own backward) can replace the bodies without touching the public API.

use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::kernels;
use crate::summary::{Chw, SummaryRow};
use crate::Result;

fn to_f64_vec(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

/// BatchNorm epsilon (PyTorch's default).
pub const BN_EPS: f64 = 1e-5;
/// BatchNorm momentum for the running statistics (PyTorch's default).
pub const BN_MOMENTUM: f64 = 0.1;

/// A tensor of the state dict, in the order the model registers it.
#[derive(Clone)]
pub(crate) enum Entry {
    /// A trainable parameter.
    Param { name: String, tensor: Tensor },
    /// The running statistics of one BatchNorm layer (prefix `name`).
    BatchNorm {
        name: String,
        stats: Arc<Mutex<BnStats>>,
    },
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Param { name, .. } | Entry::BatchNorm { name, .. } => f.write_str(name),
        }
    }
}

/// Collects the model's tensors while it is built.
#[derive(Clone, Default)]
pub(crate) struct Registry(Arc<Mutex<Vec<Entry>>>);

impl Registry {
    fn push(&self, e: Entry) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(e);
    }
    pub(crate) fn entries(&self) -> Vec<Entry> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A `VarBuilder` plus the registry: what every layer constructor takes.
#[derive(Clone)]
pub(crate) struct Ctx<'a> {
    pub(crate) vb: VarBuilder<'a>,
    pub(crate) reg: Registry,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(vb: VarBuilder<'a>) -> Self {
        Self {
            vb,
            reg: Registry::default(),
        }
    }

    /// A sub-context named `s` (a state_dict path component).
    pub(crate) fn pp(&self, s: impl ToString) -> Self {
        Self {
            vb: self.vb.pp(s),
            reg: self.reg.clone(),
        }
    }

    /// The full state_dict name of `leaf` under this context.
    pub(crate) fn name(&self, leaf: &str) -> String {
        let p = self.vb.prefix();
        if p.is_empty() {
            leaf.to_string()
        } else {
            format!("{p}.{leaf}")
        }
    }

    /// A trainable parameter, registered under its state_dict name.
    pub(crate) fn param(&self, shape: &[usize], leaf: &str, init: Init) -> Result<Tensor> {
        let t = self.vb.get_with_hints(shape, leaf, init)?;
        self.reg.push(Entry::Param {
            name: self.name(leaf),
            tensor: t.clone(),
        });
        Ok(t)
    }

    pub(crate) fn dtype(&self) -> DType {
        self.vb.dtype()
    }

    pub(crate) fn device(&self) -> &Device {
        self.vb.device()
    }
}

/// PyTorch's default initialisation of conv and linear layers: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
/// for weight and bias.
fn torch_uniform(fan_in: usize) -> Init {
    let b = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform { lo: -b, up: b }
}

/// torchstat's multiply-add count of a convolution: per output element
/// `k*k*cin` multiplications and `k*k*cin - 1 (+1 with bias)` additions.
pub(crate) fn conv_madd(out: Chw, cin: usize, k: usize, bias: bool) -> u64 {
    let mul = (k * k * cin) as u64;
    let add = mul - 1 + bias as u64;
    (out[0] * out[1] * out[2]) as u64 * (mul + add)
}

/// A 2-D convolution (square kernel, groups 1, dilation 1), PyTorch layout `[out, in, k, k]`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
    name: String,
}

impl Conv2d {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        ctx: &Ctx,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
        bias: bool,
    ) -> Result<Self> {
        let init = torch_uniform(cin * k * k);
        let weight = ctx.param(&[cout, cin, k, k], "weight", init)?;
        let bias = if bias {
            Some(ctx.param(&[cout], "bias", init)?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            stride,
            padding,
            name: ctx.vb.prefix(),
        })
    }

    /// `[N, cin, H, W] -> [N, cout, H', W']`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_fused(x, false)
    }

    /// The convolution followed by ReLU (one fused kernel on the CPU).
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_fused(x, true)
    }

    fn forward_fused(&self, x: &Tensor, relu_after: bool) -> Result<Tensor> {
        if kernels::usable(x) && x.dtype() == self.weight.dtype() && !kernels::disabled() {
            return Ok(kernels::conv2d(
                x,
                &self.weight,
                self.bias.as_ref(),
                self.stride,
                self.padding,
                relu_after,
            )?);
        }
        let y = self.forward_plain(x)?;
        if relu_after {
            relu(&y)
        } else {
            Ok(y)
        }
    }

    /// The plain candle graph of the convolution (reference for the fast kernel).
    pub(crate) fn forward_plain(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?;
        match &self.bias {
            Some(b) => Ok(y.broadcast_add(&b.reshape((1, (), 1, 1))?)?),
            None => Ok(y),
        }
    }

    /// The weight `[out, in, k, k]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias `[out]`, if the layer has one.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    fn dims(&self) -> (usize, usize, usize) {
        let d = self.weight.dims();
        (d[0], d[1], d[2])
    }

    /// Trainable values.
    pub fn num_params(&self) -> usize {
        self.weight.elem_count() + self.bias.as_ref().map_or(0, |b| b.elem_count())
    }

    /// Output shape for input `x` (per sample).
    pub(crate) fn out_shape(&self, x: Chw) -> Chw {
        let (cout, _, k) = self.dims();
        let o = |s: usize| (s + 2 * self.padding - k) / self.stride + 1;
        [cout, o(x[1]), o(x[2])]
    }

    pub(crate) fn summarize(&self, x: Chw, rows: &mut Vec<SummaryRow>) -> Chw {
        let (_, cin, k) = self.dims();
        let out = self.out_shape(x);
        rows.push(
            SummaryRow::new(
                &self.name,
                "Conv2d",
                out,
                self.num_params(),
                conv_madd(out, cin, k, self.bias.is_some()),
            )
            .with_flops(
                (out[0] * out[1] * out[2] * (k * k * cin + usize::from(self.bias.is_some())))
                    as u64,
            )
            .with_mem(
                (x[0] * x[1] * x[2] + self.num_params()) as u64,
                (out[0] * out[1] * out[2]) as u64,
            ),
        );
        out
    }
}

/// Running statistics of a BatchNorm layer (buffers, not trainable).
#[derive(Debug, Clone)]
pub(crate) struct BnStats {
    pub(crate) running_mean: Tensor,
    pub(crate) running_var: Tensor,
    pub(crate) num_batches_tracked: i64,
}

/// BatchNorm over the channels of `[N, C, H, W]`: batch statistics and a running-statistics
/// update (momentum 0.1, unbiased variance) in training, running statistics in evaluation.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    stats: Arc<Mutex<BnStats>>,
    name: String,
}

impl BatchNorm2d {
    pub(crate) fn new(ctx: &Ctx, c: usize) -> Result<Self> {
        let weight = ctx.param(&[c], "weight", Init::Const(1.0))?;
        let bias = ctx.param(&[c], "bias", Init::Const(0.0))?;
        // Buffers come from the builder when it holds them (a checkpoint), else start at
        // PyTorch's initial values; they are never registered as trainable variables.
        let vb = &ctx.vb;
        let (dtype, dev) = (ctx.dtype(), ctx.device());
        let running_mean = if vb.contains_tensor("running_mean") {
            vb.get(c, "running_mean")?
        } else {
            Tensor::zeros(c, dtype, dev)?
        };
        let running_var = if vb.contains_tensor("running_var") {
            vb.get(c, "running_var")?
        } else {
            Tensor::ones(c, dtype, dev)?
        };
        let num_batches_tracked = if vb.contains_tensor("num_batches_tracked") {
            vb.get_unchecked_dtype("num_batches_tracked", DType::I64)?
                .flatten_all()?
                .to_vec1::<i64>()?
                .first()
                .copied()
                .unwrap_or(0)
        } else {
            0
        };
        let stats = Arc::new(Mutex::new(BnStats {
            running_mean,
            running_var,
            num_batches_tracked,
        }));
        ctx.reg.push(Entry::BatchNorm {
            name: ctx.vb.prefix(),
            stats: stats.clone(),
        });
        Ok(Self {
            weight,
            bias,
            stats,
            name: ctx.vb.prefix(),
        })
    }

    fn stats(&self) -> MutexGuard<'_, BnStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Normalises `x`; in training mode also updates the running statistics.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_fused(x, train, false)
    }

    /// BatchNorm followed by ReLU (one fused kernel on the CPU).
    pub fn forward_t_relu(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_fused(x, train, true)
    }

    fn forward_fused(&self, x: &Tensor, train: bool, relu_after: bool) -> Result<Tensor> {
        if !(kernels::usable(x) && x.dtype() == self.weight.dtype() && !kernels::disabled()) {
            let y = self.forward_plain(x, train)?;
            return if relu_after { relu(&y) } else { Ok(y) };
        }
        let (n, _, h, w) = x.dims4()?;
        let running = if train {
            None
        } else {
            let s = self.stats();
            Some((to_f64_vec(&s.running_mean)?, to_f64_vec(&s.running_var)?))
        };
        let (y, batch) =
            kernels::batch_norm(x, &self.weight, &self.bias, BN_EPS, relu_after, running)?;
        if let Some(b) = batch {
            self.update_running((n * h * w) as f64, &b)?;
        }
        Ok(y)
    }

    /// `conv (-> ReLU when relu_before) -> BatchNorm (-> ReLU when relu_after)` in training
    /// mode as one fused kernel (and the running statistics update), where the fast kernels
    /// apply to `x` and `conv` has a bias; `None` otherwise (the caller runs the separate
    /// layers).
    pub(crate) fn conv_bn_train(
        &self,
        conv: &Conv2d,
        x: &Tensor,
        relu_before: bool,
        relu_after: bool,
    ) -> Result<Option<Tensor>> {
        let Some(bias) = &conv.bias else {
            return Ok(None);
        };
        if !(kernels::usable(x)
            && x.dtype() == self.weight.dtype()
            && x.dtype() == conv.weight.dtype()
            && !kernels::disabled())
        {
            return Ok(None);
        }
        let (y, b) = kernels::conv_bn_relu(
            x,
            &conv.weight,
            bias,
            &self.weight,
            &self.bias,
            conv.stride,
            conv.padding,
            BN_EPS,
            relu_before,
            relu_after,
        )?;
        let (n, _, h, w) = y.dims4()?;
        self.update_running((n * h * w) as f64, &b)?;
        Ok(Some(y))
    }

    /// The running statistics' update from one training batch of `count` values per
    /// channel (momentum 0.1, unbiased variance), as PyTorch's.
    fn update_running(&self, count: f64, b: &kernels::BnBatchStats) -> Result<()> {
        let c = b.mean.len();
        let mut s = self.stats();
        let m = BN_MOMENTUM;
        let (rm, rv) = (to_f64_vec(&s.running_mean)?, to_f64_vec(&s.running_var)?);
        let bessel = count / (count - 1.0).max(1.0);
        let rm: Vec<f64> = (0..c).map(|i| (1.0 - m) * rm[i] + m * b.mean[i]).collect();
        let rv: Vec<f64> = (0..c)
            .map(|i| (1.0 - m) * rv[i] + m * b.var[i] * bessel)
            .collect();
        let (dt, dev) = (s.running_mean.dtype(), s.running_mean.device().clone());
        s.running_mean = Tensor::from_vec(rm, c, &dev)?.to_dtype(dt)?;
        s.running_var = Tensor::from_vec(rv, c, &dev)?.to_dtype(dt)?;
        s.num_batches_tracked += 1;
        Ok(())
    }

    /// The plain candle graph (reference for the fast kernel).
    pub(crate) fn forward_plain(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = self.weight.elem_count();
        let w = self.weight.reshape((1, c, 1, 1))?;
        let b = self.bias.reshape((1, c, 1, 1))?;
        if train {
            let (n, _, h, wd) = x.dims4()?;
            let count = (n * h * wd) as f64;
            let mean = x.mean_keepdim((0, 2, 3))?;
            let xc = x.broadcast_sub(&mean)?;
            let var = xc.sqr()?.mean_keepdim((0, 2, 3))?;
            let y = xc.broadcast_div(&(&var + BN_EPS)?.sqrt()?)?;
            {
                let mut s = self.stats();
                let m = BN_MOMENTUM;
                let mean = mean.detach().flatten_all()?;
                let unbiased = (var.detach().flatten_all()? * (count / (count - 1.0).max(1.0)))?;
                s.running_mean = ((&s.running_mean * (1.0 - m))? + (mean * m)?)?;
                s.running_var = ((&s.running_var * (1.0 - m))? + (unbiased * m)?)?;
                s.num_batches_tracked += 1;
            }
            Ok(y.broadcast_mul(&w)?.broadcast_add(&b)?)
        } else {
            let (rm, rv) = {
                let s = self.stats();
                (
                    s.running_mean.reshape((1, c, 1, 1))?,
                    s.running_var.reshape((1, c, 1, 1))?,
                )
            };
            let y = x
                .broadcast_sub(&rm)?
                .broadcast_div(&(rv + BN_EPS)?.sqrt()?)?;
            Ok(y.broadcast_mul(&w)?.broadcast_add(&b)?)
        }
    }

    /// Trainable values (weight and bias).
    pub fn num_params(&self) -> usize {
        2 * self.weight.elem_count()
    }

    pub(crate) fn summarize(&self, x: Chw, rows: &mut Vec<SummaryRow>) -> Chw {
        let n = (x[0] * x[1] * x[2]) as u64;
        rows.push(
            SummaryRow::new(&self.name, "BatchNorm2d", x, self.num_params(), 4 * n)
                .with_flops(2 * n)
                .with_mem(n + 2 * x[0] as u64, n),
        );
        x
    }
}

/// A fully connected layer, PyTorch layout `[out, in]`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
    name: String,
}

impl Linear {
    pub(crate) fn new(ctx: &Ctx, fin: usize, fout: usize) -> Result<Self> {
        let init = torch_uniform(fin);
        let weight = ctx.param(&[fout, fin], "weight", init)?;
        let bias = ctx.param(&[fout], "bias", init)?;
        Ok(Self {
            weight,
            bias,
            name: ctx.vb.prefix(),
        })
    }

    /// `[N, in] -> [N, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)?)
    }

    /// The same map computed as `(W Xᵀ)ᵀ + b`, for wide layers (the baselines' dense heads,
    /// up to 12544 x 4096): candle's backward of `X Wᵀ` accumulates the weight's gradient
    /// through the transposed view, a strided add over every weight (one cache miss per
    /// value); here the weight is the matrix product's left operand and its gradient is
    /// accumulated contiguously. Only the input's (small) gradient goes through a
    /// transpose. Equal to [`Linear::forward`] up to the products' summation order.
    pub fn forward_wide(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self
            .weight
            .matmul(&x.t()?)?
            .t()?
            .broadcast_add(&self.bias)?)
    }

    /// Trainable values.
    pub fn num_params(&self) -> usize {
        self.weight.elem_count() + self.bias.elem_count()
    }

    pub(crate) fn summarize(&self, rows: &mut Vec<SummaryRow>) {
        let (fout, fin) = (self.weight.dims()[0], self.weight.dims()[1]);
        // torchstat: out * (in multiplications + in - 1 additions), bias not counted.
        let madd = (fout * (2 * fin - 1)) as u64;
        rows.push(
            SummaryRow::new_dims(&self.name, "Linear", vec![fout], self.num_params(), madd)
                .with_flops((fin * fout) as u64)
                .with_mem((fin + self.num_params()) as u64, fout as u64),
        );
    }
}

/// Max pool 2x2, stride 2 (odd trailing rows/columns dropped, as PyTorch does).
///
/// The gradient goes to the first maximum of each window in row-major order, as in PyTorch
/// (candle 0.11's `max_pool2d` backward scales it by 1/4, and a plain `max` reduction gives
/// every tied element the full gradient, which flat regions of flow features make common).
pub fn max_pool2(x: &Tensor) -> Result<Tensor> {
    if kernels::usable(x) && !kernels::disabled() {
        return Ok(kernels::max_pool2(x, None)?);
    }
    max_pool2_plain(x)
}

/// Max pool 2x2 of `a + b` (the residual join), one fused kernel on the CPU.
pub(crate) fn max_pool2_sum(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if kernels::usable(a) && a.dtype() == b.dtype() && a.dims() == b.dims() && !kernels::disabled()
    {
        return Ok(kernels::max_pool2(a, Some(b))?);
    }
    max_pool2_plain(&(a + b)?)
}

/// The plain candle graph of [`max_pool2`] (reference for the fast kernel).
pub(crate) fn max_pool2_plain(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (ho, wo) = (h / 2, w / 2);
    let x = if h % 2 == 1 || w % 2 == 1 {
        x.narrow(2, 0, 2 * ho)?.narrow(3, 0, 2 * wo)?
    } else {
        x.clone()
    };
    let windows = x
        .reshape((n, c, ho, 2, wo, 2))?
        .permute((0, 1, 2, 4, 3, 5))?
        .contiguous()?
        .reshape((n, c, ho, wo, 4))?;
    Ok(max_keepdim_first(&windows, 4)?.squeeze(4)?)
}

/// Maximum over `dim` (kept, size 1) whose gradient goes to the first maximal element only,
/// as PyTorch's `max(dim)`, `MaxPool2d` and `AdaptiveMaxPool2d` do.
pub fn max_keepdim_first(x: &Tensor, dim: usize) -> Result<Tensor> {
    let x = x.contiguous()?;
    let idx = x.argmax_keepdim(dim)?;
    Ok(x.gather(&idx, dim)?)
}

/// ReLU with PyTorch's gradient (zero at 0; candle's `relu` passes the gradient at 0).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.is_contiguous() && matches!(x.dtype(), DType::F32 | DType::F64) {
        Ok(x.apply_op1(TorchRelu)?)
    } else {
        let mask = x.gt(0.0)?.to_dtype(x.dtype())?.detach();
        Ok(x.mul(&mask)?)
    }
}

struct TorchRelu;

impl candle_core::CustomOp1 for TorchRelu {
    fn name(&self) -> &'static str {
        "relu"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use candle_core::CpuStorage as S;
        let (a, b) = l
            .contiguous_offsets()
            .ok_or(candle_core::Error::RequiresContiguous { op: "relu" })?;
        let out = match s {
            S::F32(v) => S::F32(
                v[a..b]
                    .iter()
                    .map(|&x| if x > 0.0 { x } else { 0.0 })
                    .collect(),
            ),
            S::F64(v) => S::F64(
                v[a..b]
                    .iter()
                    .map(|&x| if x > 0.0 { x } else { 0.0 })
                    .collect(),
            ),
            _ => candle_core::bail!("relu: expected f32 or f64 storage"),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        // res > 0 exactly where the input is > 0.
        Ok(Some(grad.mul(&res.gt(0.0)?.to_dtype(grad.dtype())?)?))
    }
}

pub(crate) fn pool_summary(name: &str, x: Chw, rows: &mut Vec<SummaryRow>) -> Chw {
    let out = [x[0], x[1] / 2, x[2] / 2];
    // torchstat: (k*k - 1) comparisons per output element.
    let madd = 3 * (out[0] * out[1] * out[2]) as u64;
    rows.push(
        SummaryRow::new(name, "MaxPool2d", out, 0, madd)
            .with_flops((x[0] * x[1] * x[2]) as u64)
            .with_mem(
                (x[0] * x[1] * x[2]) as u64,
                (out[0] * out[1] * out[2]) as u64,
            ),
    );
    out
}

pub(crate) fn relu_summary(name: &str, x: Chw, rows: &mut Vec<SummaryRow>) -> Chw {
    let n = (x[0] * x[1] * x[2]) as u64;
    rows.push(
        SummaryRow::new(name, "ReLU", x, 0, n)
            .with_flops(n)
            .with_mem(n, n),
    );
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    #[test]
    fn max_pool_matches_candle_forward_and_has_unit_gradient() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 6, 7), &dev).unwrap()).unwrap();
        let ours = max_pool2(x.as_tensor()).unwrap();
        let theirs = x.as_tensor().max_pool2d(2).unwrap();
        assert_eq!(ours.dims(), theirs.dims());
        let diff = (ours.clone() - theirs)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
        // Ties: only the first maximum of a window gets the gradient.
        let z = Var::zeros((1, 1, 2, 4), DType::F32, &dev).unwrap();
        let g = max_pool2(z.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g = g
            .get(z.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(g, [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        // d(sum pool(x))/dx is 1 at each window's maximum: the gradient sums to the
        // number of outputs (2*3*3*3 = 54), not a quarter of it.
        let g = ours.sum_all().unwrap().backward().unwrap();
        let gs = g
            .get(x.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(gs, 54.0);
    }

    #[test]
    fn relu_gradient_is_zero_at_zero() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::new(&[-1f32, 0.0, 2.0], &dev).unwrap()).unwrap();
        let y = relu(x.as_tensor()).unwrap();
        assert_eq!(y.to_vec1::<f32>().unwrap(), [0.0, 0.0, 2.0]);
        let g = y.sum_all().unwrap().backward().unwrap();
        assert_eq!(
            g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap(),
            [0.0, 0.0, 1.0]
        );
    }

    #[test]
    fn batch_norm_training_updates_running_stats_like_pytorch() {
        let dev = Device::Cpu;
        let vm = candle_nn::VarMap::new();
        let ctx = Ctx::new(VarBuilder::from_varmap(&vm, DType::F64, &dev));
        let bn = BatchNorm2d::new(&ctx, 2).unwrap();
        // Channel 0 holds 1..=8, channel 1 holds 2x that; batch 2, 2x2 maps.
        let v: Vec<f64> = (0..16)
            .map(|i| ((i % 4) + 1 + 4 * (i / 8)) as f64)
            .collect();
        let x = Tensor::from_vec(v, (2, 2, 2, 2), &dev).unwrap();
        let x = Tensor::cat(
            &[
                x.narrow(1, 0, 1).unwrap(),
                (x.narrow(1, 0, 1).unwrap() * 2.0).unwrap(),
            ],
            1,
        )
        .unwrap();
        let y = bn.forward_t(&x, true).unwrap();
        // Normalised output has zero mean and (biased) unit variance per channel.
        let m = y
            .mean_keepdim((0, 2, 3))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        assert!(m.iter().all(|v| v.abs() < 1e-12), "{m:?}");
        let s = bn.stats();
        // Channel 0: values 1..8, mean 4.5, unbiased variance 6; channel 1 doubled.
        let rm = s.running_mean.to_vec1::<f64>().unwrap();
        let rv = s.running_var.to_vec1::<f64>().unwrap();
        for (got, want) in rm
            .iter()
            .zip([0.45, 0.9])
            .chain(rv.iter().zip([0.9 + 0.6, 0.9 + 2.4]))
        {
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        }
        assert_eq!(s.num_batches_tracked, 1);
        assert!(vm.all_vars().len() == 2, "running stats are not variables");
    }
}
