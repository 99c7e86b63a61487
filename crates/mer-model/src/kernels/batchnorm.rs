//! BatchNorm (+ optional ReLU), training and evaluation mode, with its backward; the batch
//! statistics and affine maps the fused op shares.

use super::*;

/// Sum of a slice, eight partial sums (vectorisable), in `T` then widened.
pub(super) fn sum<T: Lane>(s: &[T]) -> f64 {
    let mut acc = [zero::<T>(); 8];
    let mut it = s.chunks_exact(8);
    for c in &mut it {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    let mut t = 0f64;
    for a in acc {
        t += a.to_f64();
    }
    for &v in it.remainder() {
        t += v.to_f64();
    }
    t
}

/// `sum((s - m)^2)`.
pub(super) fn sum_sq_dev<T: Lane>(s: &[T], m: T) -> f64 {
    let mut acc = [zero::<T>(); 8];
    let mut it = s.chunks_exact(8);
    for c in &mut it {
        for i in 0..8 {
            let d = c[i] - m;
            acc[i] += d * d;
        }
    }
    let mut t = 0f64;
    for a in acc {
        t += a.to_f64();
    }
    for &v in it.remainder() {
        let d = (v - m).to_f64();
        t += d * d;
    }
    t
}

/// `sum(g)` and `sum(g * (x - m))` with `g = dy`, gated by `x * a + b > 0` (the fused
/// ReLU's output, recomputed bit for bit instead of read) when `gate` is `Some((a, b))`.
pub(super) fn sum_grad<T: Lane>(dy: &[T], x: &[T], gate: Option<(T, T)>, m: T) -> (f64, f64) {
    let z = zero::<T>();
    let (mut a, mut b) = ([z; 8], [z; 8]);
    let (mut sa, mut sb) = (0f64, 0f64);
    match gate {
        Some((ga, gb)) => {
            let mut it = dy.chunks_exact(8).zip(x.chunks_exact(8));
            for (d, xv) in &mut it {
                for l in 0..8 {
                    let g = T::gate(xv[l] * ga + gb, d[l]);
                    a[l] += g;
                    b[l] += g * (xv[l] - m);
                }
            }
            let tail = dy.len() - dy.len() % 8;
            for j in tail..dy.len() {
                let g = T::gate(x[j] * ga + gb, dy[j]);
                sa += g.to_f64();
                sb += (g * (x[j] - m)).to_f64();
            }
        }
        None => {
            let mut it = dy.chunks_exact(8).zip(x.chunks_exact(8));
            for (d, xv) in &mut it {
                for l in 0..8 {
                    a[l] += d[l];
                    b[l] += d[l] * (xv[l] - m);
                }
            }
            let tail = dy.len() - dy.len() % 8;
            for j in tail..dy.len() {
                sa += dy[j].to_f64();
                sb += (dy[j] * (x[j] - m)).to_f64();
            }
        }
    }
    for l in 0..8 {
        sa += a[l].to_f64();
        sb += b[l].to_f64();
    }
    (sa, sb)
}

/// The per-channel affine map `y = x * a + b` of a BatchNorm with these statistics, rounded
/// to `T` exactly as the forward pass applies it (the backward recomputes the fused ReLU's
/// gate from it, so both must agree bit for bit).
pub(super) fn bn_affine<T: Lane>(
    gamma: &[T],
    beta: &[T],
    mean: &[f64],
    var: &[f64],
    eps: f64,
) -> Vec<(T, T)> {
    (0..gamma.len())
        .map(|ch| {
            let a = gamma[ch].to_f64() / (var[ch] + eps).sqrt();
            (
                T::from_f64(a),
                T::from_f64(beta[ch].to_f64() - mean[ch] * a),
            )
        })
        .collect()
}

/// Per-channel mean and biased variance of `x` (`[n, c, hw]`), each sum in `T` over eight
/// lanes per plane, widened to f64 across planes; the variance is taken about the mean
/// rounded to `T` and corrected to the exact mean.
pub(super) fn bn_batch_stats<T: Lane>(
    x: &[T],
    (n, c, hw): (usize, usize, usize),
) -> (Vec<f64>, Vec<f64>) {
    let count = (n * hw).max(1) as f64;
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let mut s = 0.0;
            for i in 0..n {
                s += sum(&x[(i * c + ch) * hw..][..hw]);
            }
            let m = s / count;
            let mt = T::from_f64(m);
            let mut q = 0.0;
            for i in 0..n {
                q += sum_sq_dev(&x[(i * c + ch) * hw..][..hw], mt);
            }
            let dm = m - mt.to_f64();
            (m, (q / count - dm * dm).max(0.0))
        })
        .unzip()
}

/// `y = x * a + b` per channel (`ab[ch]`), then ReLU when `relu`; `x` is `[n, c, hw]`.
pub(super) fn bn_apply<T: Lane>(x: &[T], ab: &[(T, T)], hw: usize, relu: bool) -> Vec<T> {
    let c = ab.len();
    let mut y = filled_later::<T>(x.len());
    y.par_chunks_mut(hw.max(1)).enumerate().for_each(|(p, ys)| {
        let (a, b) = ab[p % c];
        let xs = &x[p * hw..(p + 1) * hw];
        if relu {
            for (o, &v) in ys.iter_mut().zip(xs) {
                let t = v * a + b;
                *o = T::gate(t, t);
            }
        } else {
            for (o, &v) in ys.iter_mut().zip(xs) {
                *o = v * a + b;
            }
        }
    });
    y
}

/// Per channel: `(a, c1, c0)` of `dx = a*g + c1*x + c0`, and `(dgamma, dbeta)`.
pub(super) type BnBackwardCoefs<T> = (Vec<(T, T, T)>, Vec<(T, T)>);

/// What a BatchNorm backward needs per channel: the `dx = a*g + c1*x + c0` coefficients
/// (`c1 = c0 = 0` in evaluation mode) and `(dgamma, dbeta)`. `gates` are the fused ReLU's
/// `(a, b)` when there is one (see [`bn_affine`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn bn_backward_coefs<T: Lane>(
    x: &[T],
    gamma: &[T],
    dy: &[T],
    gates: Option<&[(T, T)]>,
    mean: &[f64],
    var: &[f64],
    eps: f64,
    train: bool,
    (n, c, hw): (usize, usize, usize),
) -> BnBackwardCoefs<T> {
    let count = (n * hw).max(1) as f64;
    // Per channel: sum(g), sum(g * (x - mean)).
    let sums: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let mt = T::from_f64(mean[ch]);
            let dm = mean[ch] - mt.to_f64();
            let (mut sg, mut sgx) = (0.0, 0.0);
            for i in 0..n {
                let r = (i * c + ch) * hw..(i * c + ch + 1) * hw;
                let (a, b) = sum_grad(&dy[r.clone()], &x[r], gates.map(|g| g[ch]), mt);
                sg += a;
                sgx += b;
            }
            (sg, sgx - dm * sg)
        })
        .collect();
    (0..c)
        .map(|ch| {
            let invstd = 1.0 / (var[ch] + eps).sqrt();
            let a = gamma[ch].to_f64() * invstd;
            let (sg, sgx) = sums[ch];
            let coef = if train {
                let c1 = -a * invstd * invstd * sgx / count;
                let c0 = -a * sg / count - c1 * mean[ch];
                (T::from_f64(a), T::from_f64(c1), T::from_f64(c0))
            } else {
                (T::from_f64(a), zero(), zero())
            };
            (coef, (T::from_f64(sgx * invstd), T::from_f64(sg)))
        })
        .unzip()
}

/// Batch statistics of a training-mode BatchNorm forward: per-channel mean and biased
/// variance.
#[derive(Debug, Clone, Default)]
pub(crate) struct BnBatchStats {
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
}

/// BatchNorm of `[N, C, H, W]` on `(x, gamma, beta)`, optionally followed by ReLU. In
/// training mode it normalises with the batch statistics and keeps them (see
/// [`BnOp::batch_stats`]); in evaluation mode it uses `running` (mean, variance).
pub(crate) struct BnOp {
    pub eps: f64,
    pub relu: bool,
    /// `None`: training mode (batch statistics).
    pub running: Option<(Vec<f64>, Vec<f64>)>,
    pub(super) stats: Arc<Mutex<BnBatchStats>>,
}

impl BnOp {
    pub(crate) fn new(eps: f64, relu: bool, running: Option<(Vec<f64>, Vec<f64>)>) -> Self {
        Self {
            eps,
            relu,
            running,
            stats: Arc::default(),
        }
    }

    /// Where the batch statistics of a training-mode forward land.
    pub(crate) fn stats_handle(&self) -> Arc<Mutex<BnBatchStats>> {
        self.stats.clone()
    }

    /// The batch statistics of the last training-mode forward.
    pub(crate) fn batch_stats(&self) -> BnBatchStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(super) fn fwd<T: Lane>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        let hw = h * w;
        let x = slice::<T>(s1, l1, "batch-norm")?;
        let gamma = slice::<T>(s2, l2, "batch-norm")?;
        let beta = slice::<T>(s3, l3, "batch-norm")?;
        if gamma.len() != c || beta.len() != c {
            bail!(
                "batch-norm: {c} channels, weight {} and bias {}",
                gamma.len(),
                beta.len()
            );
        }
        let (mean, var) = match &self.running {
            Some((m, v)) => (m.clone(), v.clone()),
            None => {
                let (mean, var) = bn_batch_stats(x, (n, c, hw));
                *self.stats.lock().unwrap_or_else(|e| e.into_inner()) = BnBatchStats {
                    mean: mean.clone(),
                    var: var.clone(),
                };
                (mean, var)
            }
        };
        let ab = bn_affine(gamma, beta, &mean, &var, self.eps);
        let y = bn_apply(x, &ab, hw, self.relu);
        Ok((T::to_cpu_storage_owned(y), l1.shape().clone()))
    }
}

impl CustomOp3 for BnOp {
    fn name(&self) -> &'static str {
        "mer-batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        by_float!(s1, self.name(), T => self.fwd::<T>(s1, l1, s2, l2, s3, l3))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (mean, var, train) = match &self.running {
            Some((m, v)) => (m.clone(), v.clone(), false),
            None => {
                let s = self.batch_stats();
                (s.mean, s.var, true)
            }
        };
        let op = BnBwdOp {
            eps: self.eps,
            train,
            mean,
            var,
            relu_beta: self.relu.then(|| beta.clone()),
        };
        let grad = grad.contiguous()?;
        let flat = x.apply_op3_no_bwd(gamma, &grad, &op)?;
        let (nx, c) = (x.elem_count(), gamma.elem_count());
        let dx = x
            .track_op()
            .then(|| flat.narrow(0, 0, nx)?.reshape(x.shape()))
            .transpose()?;
        let dg = gamma
            .track_op()
            .then(|| flat.narrow(0, nx, c))
            .transpose()?;
        let db = beta
            .track_op()
            .then(|| flat.narrow(0, nx + c, c))
            .transpose()?;
        Ok((dx, dg, db))
    }
}

/// Backward of [`BnOp`] on `(x, gamma, dy)`: `[dx | dgamma | dbeta]` flattened.
pub(super) struct BnBwdOp {
    pub(super) eps: f64,
    pub(super) train: bool,
    pub(super) mean: Vec<f64>,
    pub(super) var: Vec<f64>,
    /// The BatchNorm's bias when a ReLU is fused: the gate `y > 0` is recomputed from `x`.
    pub(super) relu_beta: Option<Tensor>,
}

impl BnBwdOp {
    pub(super) fn run<T: Lane>(
        &self,
        x: &[T],
        gamma: &[T],
        dy: &[T],
        beta: Option<&[T]>,
        (n, c, hw): (usize, usize, usize),
    ) -> Vec<T> {
        let gates: Option<Vec<(T, T)>> =
            beta.map(|b| bn_affine(gamma, b, &self.mean, &self.var, self.eps));
        let (coef, dgb) = bn_backward_coefs(
            x,
            gamma,
            dy,
            gates.as_deref(),
            &self.mean,
            &self.var,
            self.eps,
            self.train,
            (n, c, hw),
        );
        let len = x.len();
        let mut out = filled_later::<T>(len + 2 * c);
        let (dx, rest) = out.split_at_mut(len);
        dx.par_chunks_mut(hw.max(1)).enumerate().for_each(|(p, d)| {
            let (a, c1, c0) = coef[p % c];
            let r = p * hw..(p + 1) * hw;
            match gates.as_deref() {
                Some(gates) => {
                    let (ga, gb) = gates[p % c];
                    for (o, (&g, &xv)) in d.iter_mut().zip(dy[r.clone()].iter().zip(&x[r])) {
                        let g = T::gate(xv * ga + gb, g);
                        *o = a * g + c1 * xv + c0;
                    }
                }
                None => {
                    for (o, (&g, &xv)) in d.iter_mut().zip(dy[r.clone()].iter().zip(&x[r])) {
                        *o = a * g + c1 * xv + c0;
                    }
                }
            }
        });
        for (ch, (dg, db)) in dgb.into_iter().enumerate() {
            rest[ch] = dg;
            rest[c + ch] = db;
        }
        out
    }

    pub(super) fn go<T: Lane>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        let x = slice::<T>(s1, l1, "batch-norm-bwd")?;
        let gamma = slice::<T>(s2, l2, "batch-norm-bwd")?;
        let dy = slice::<T>(s3, l3, "batch-norm-bwd")?;
        let out = match &self.relu_beta {
            Some(b) => with_slice::<T, _>(b, "batch-norm-bwd", |b| {
                self.run(x, gamma, dy, Some(b), (n, c, h * w))
            })?,
            None => self.run(x, gamma, dy, None, (n, c, h * w)),
        };
        let len = out.len();
        Ok((T::to_cpu_storage_owned(out), Shape::from(len)))
    }
}

impl CustomOp3 for BnBwdOp {
    fn name(&self) -> &'static str {
        "mer-batch-norm-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        by_float!(s1, self.name(), T => self.go::<T>(s1, l1, s2, l2, s3, l3))
    }
}

/// BatchNorm (+ ReLU) on the fast kernels: training mode when `running` is `None` (then
/// also returns the batch mean and biased variance), else evaluation mode.
pub(crate) fn batch_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
    running: Option<(Vec<f64>, Vec<f64>)>,
) -> Result<(Tensor, Option<BnBatchStats>)> {
    let train = running.is_none();
    let op = BnOp::new(eps, relu, running);
    let stats = op.stats_handle();
    let y = x
        .contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    let s = train.then(|| stats.lock().unwrap_or_else(|e| e.into_inner()).clone());
    Ok((y, s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::*;
    use candle_core::Var;

    #[test]
    fn batch_norm_matches_candle_forward_and_backward() {
        for dt in [DType::F64, DType::F32] {
            let tol = if dt == DType::F64 { 1e-10 } else { 1e-4 };
            for &(n, c, h, w) in &[(2, 3, 5, 7), (4, 2, 1, 1), (1, 5, 6, 3), (3, 8, 4, 4)] {
                for (train, relu) in [(true, false), (true, true), (false, false), (false, true)] {
                    // Offset and scaled inputs: the statistics must not lose precision.
                    let x = Var::from_tensor(
                        &((randn(&[n, c, h, w], dt) * 3.0).unwrap() + 5.0).unwrap(),
                    )
                    .unwrap();
                    let g = Var::from_tensor(&randn(&[c], dt)).unwrap();
                    let b = Var::from_tensor(&randn(&[c], dt)).unwrap();
                    let rm = randn(&[c], dt);
                    let rv = (randn(&[c], dt).abs().unwrap() + 0.5).unwrap();
                    let running = (!train).then(|| {
                        let f =
                            |t: &Tensor| t.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
                        (f(&rm), f(&rv))
                    });
                    let (fast, stats) = batch_norm(
                        x.as_tensor(),
                        g.as_tensor(),
                        b.as_tensor(),
                        1e-5,
                        relu,
                        running,
                    )
                    .unwrap();
                    let mut plain = plain_bn(
                        x.as_tensor(),
                        g.as_tensor(),
                        b.as_tensor(),
                        (!train).then_some((&rm, &rv)),
                    );
                    if relu {
                        plain = plain_relu(plain);
                    }
                    let what = format!("{dt:?} {:?} train {train} relu {relu}", (n, c, h, w));
                    assert!(
                        max_rel(&fast, &plain) < tol,
                        "{what}: forward {}",
                        max_rel(&fast, &plain)
                    );
                    if train {
                        let s = stats.unwrap();
                        let m = x
                            .as_tensor()
                            .to_dtype(DType::F64)
                            .unwrap()
                            .mean_keepdim((0, 2, 3))
                            .unwrap();
                        let v = x
                            .as_tensor()
                            .to_dtype(DType::F64)
                            .unwrap()
                            .broadcast_sub(&m)
                            .unwrap()
                            .sqr()
                            .unwrap()
                            .mean_keepdim((0, 2, 3))
                            .unwrap();
                        let (m, v) = (
                            m.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
                            v.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
                        );
                        for i in 0..c {
                            assert!(
                                (s.mean[i] - m[i]).abs() < 1e-5
                                    && (s.var[i] - v[i]).abs() < 1e-4 * v[i].max(1.0),
                                "{what}: stats"
                            );
                        }
                    } else {
                        assert!(stats.is_none());
                    }
                    let r = randn(plain.dims(), dt);
                    let gf = grads(&fast, &r, &[&x, &g, &b]);
                    let gp = grads(&plain, &r, &[&x, &g, &b]);
                    for (i, (a, p)) in gf.iter().zip(&gp).enumerate() {
                        let e = max_rel(a.as_ref().unwrap(), p.as_ref().unwrap());
                        assert!(e < tol, "{what}: gradient {i} differs by {e}");
                    }
                }
            }
        }
    }
}
