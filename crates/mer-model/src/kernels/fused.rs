//! Convolution (+ ReLU) + training-mode BatchNorm (+ ReLU) as one custom op.
//!
//! Against a convolution op followed by a BatchNorm op it saves, per layer and step: candle's
//! gradient accumulation of the convolution's output (a zeroed tensor plus an addition, both
//! the size of the activation), and the BatchNorm input gradient as a batch-sized tensor: the
//! backward forms it one sample at a time, in cache, right before that sample's convolution
//! gradients ([`DyMap::Bn`]). The arithmetic is that of the separate ops.

use super::*;

/// What a training forward leaves for its backward and for the running statistics.
#[derive(Default)]
struct Saved {
    /// The BatchNorm input (the convolution's output with bias, after the ReLU when one
    /// comes first), flattened.
    z: Option<Tensor>,
    stats: BnBatchStats,
}

/// `relu?(batch_norm(relu?(conv2d(x, w) + bias)))` in training mode, on `(x, params)` with
/// `params = [w (flattened) | bias | gamma | beta]`.
struct ConvBnReluOp {
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    eps: f64,
    /// ReLU between the convolution and the BatchNorm (the stem's order).
    relu_before: bool,
    /// ReLU after the BatchNorm (the residual blocks' order).
    relu: bool,
    saved: Arc<Mutex<Saved>>,
}

impl ConvBnReluOp {
    fn geom(&self, lx: &Layout, lp: &Layout) -> Result<Geom> {
        let (_, cin, _, _) = lx.shape().dims4()?;
        let kk = cin * self.k * self.k;
        if lp.shape().elem_count() != self.cout * (kk + 3) {
            bail!(
                "conv-bn: {} parameters for {} output channels of {cin}x{}x{} kernels (expected {})",
                lp.shape().elem_count(),
                self.cout,
                self.k,
                self.k,
                self.cout * (kk + 3)
            );
        }
        Geom::of_input("conv-bn", lx, self.cout, self.k, self.stride, self.pad)
    }

    fn fwd<T: Lane>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.geom(l1, l2)?;
        let x = slice::<T>(s1, l1, "conv-bn")?;
        let p = slice::<T>(s2, l2, "conv-bn")?;
        let (w, b, gamma, beta) = split_params(p, &g);
        let z = conv_forward(x, w, Some(b), &g, self.relu_before);
        let (mean, var) = bn_batch_stats(&z, (g.n, g.cout, g.ohw()));
        let ab = bn_affine(gamma, beta, &mean, &var, self.eps);
        let y = bn_apply(&z, &ab, g.ohw(), self.relu);
        let zlen = z.len();
        let z = Tensor::from_vec(z, zlen, &candle_core::Device::Cpu)?;
        *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = Saved {
            z: Some(z),
            stats: BnBatchStats { mean, var },
        };
        Ok((
            T::to_cpu_storage_owned(y),
            Shape::from((g.n, g.cout, g.oh(), g.ow())),
        ))
    }
}

/// `(w, bias, gamma, beta)` of the packed parameters.
fn split_params<'a, T>(p: &'a [T], g: &Geom) -> (&'a [T], &'a [T], &'a [T], &'a [T]) {
    let (w, rest) = p.split_at(g.cout * g.kk());
    let (b, rest) = rest.split_at(g.cout);
    let (gamma, beta) = rest.split_at(g.cout);
    (w, b, gamma, beta)
}

impl CustomOp2 for ConvBnReluOp {
    fn name(&self) -> &'static str {
        "mer-conv-bn-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        by_float!(s1, self.name(), T => self.fwd::<T>(s1, l1, s2, l2))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (z, stats) = {
            let s = self.saved.lock().unwrap_or_else(|e| e.into_inner());
            match &s.z {
                Some(z) => (z.clone(), s.stats.clone()),
                None => bail!("mer-conv-bn-relu: backward before forward"),
            }
        };
        let need_dx = x.track_op();
        let op = ConvBnReluBwdOp {
            fwd: ConvBnReluOp {
                cout: self.cout,
                k: self.k,
                stride: self.stride,
                pad: self.pad,
                eps: self.eps,
                relu_before: self.relu_before,
                relu: self.relu,
                saved: Arc::default(),
            },
            need_dx,
            z,
            stats,
        };
        let flat = x.apply_op3_no_bwd(params, &grad.contiguous()?, &op)?;
        let nx = if need_dx { x.elem_count() } else { 0 };
        let dx = need_dx
            .then(|| flat.narrow(0, 0, nx)?.reshape(x.shape()))
            .transpose()?;
        let dp = flat.narrow(0, nx, params.elem_count())?;
        Ok((dx, Some(dp)))
    }
}

/// Backward of [`ConvBnReluOp`] on `(x, params, dy)`:
/// `[dx (when asked) | dW | dbias | dgamma | dbeta]` flattened.
struct ConvBnReluBwdOp {
    fwd: ConvBnReluOp,
    need_dx: bool,
    z: Tensor,
    stats: BnBatchStats,
}

impl ConvBnReluBwdOp {
    fn run<T: Lane>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.fwd.geom(l1, l2)?;
        let x = slice::<T>(s1, l1, "conv-bn-bwd")?;
        let p = slice::<T>(s2, l2, "conv-bn-bwd")?;
        let dy = slice::<T>(s3, l3, "conv-bn-bwd")?;
        let (w, _, gamma, beta) = split_params(p, &g);
        let (mean, var, eps) = (&self.stats.mean, &self.stats.var, self.fwd.eps);
        let out = with_slice::<T, _>(&self.z, "conv-bn-bwd", |z| {
            let gates = self
                .fwd
                .relu
                .then(|| bn_affine(gamma, beta, mean, var, eps));
            let (coef, dgb) = bn_backward_coefs(
                z,
                gamma,
                dy,
                gates.as_deref(),
                mean,
                var,
                eps,
                true,
                (g.n, g.cout, g.ohw()),
            );
            let dmap = DyMap::Bn {
                z,
                coef: &coef,
                gates: gates.as_deref(),
                pre_relu: self.fwd.relu_before,
            };
            let mut out = conv_backward(x, w, dy, &dmap, &g, self.need_dx, 2 * g.cout);
            let at = out.len() - 2 * g.cout;
            for (ch, (dg, db)) in dgb.into_iter().enumerate() {
                out[at + ch] = dg;
                out[at + g.cout + ch] = db;
            }
            out
        })?;
        let len = out.len();
        Ok((T::to_cpu_storage_owned(out), Shape::from(len)))
    }
}

impl CustomOp3 for ConvBnReluBwdOp {
    fn name(&self) -> &'static str {
        "mer-conv-bn-relu-bwd"
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
        by_float!(s1, self.name(), T => self.run::<T>(s1, l1, s2, l2, s3, l3))
    }
}

/// `relu?(batch_norm(relu?(conv2d(x, w, padding, stride) + bias)))` in training mode (batch
/// statistics) as one op: a ReLU before the BatchNorm when `relu_before`, after it when
/// `relu`; returns the output and the batch mean and biased variance (for
/// the running statistics). The parameters stay separate tensors (and variables): they are
/// packed into one small tensor per call, through which their gradients flow back.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_bn_relu(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    stride: usize,
    pad: usize,
    eps: f64,
    relu_before: bool,
    relu: bool,
) -> Result<(Tensor, BnBatchStats)> {
    let (cout, _, k, _) = w.dims4()?;
    let params = Tensor::cat(&[&w.flatten_all()?, bias, gamma, beta], 0)?;
    let saved = Arc::new(Mutex::new(Saved::default()));
    let op = ConvBnReluOp {
        cout,
        k,
        stride,
        pad,
        eps,
        relu_before,
        relu,
        saved: saved.clone(),
    };
    let y = x.contiguous()?.apply_op2(&params, op)?;
    let stats = saved
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .stats
        .clone();
    Ok((y, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::*;
    use candle_core::Var;

    #[test]
    fn fused_conv_bn_relu_equals_the_separate_ops_bit_for_bit() {
        // (n, cin, h, w, cout, k, stride, pad): odd sizes, strided, pointwise, one sample.
        let cases = [
            (3, 2, 7, 5, 4, 3, 1, 1),
            (2, 3, 9, 10, 5, 3, 2, 1),
            (4, 5, 4, 4, 3, 1, 1, 0),
            (1, 2, 6, 6, 2, 3, 1, 1),
        ];
        for dt in [DType::F64, DType::F32] {
            for &(n, cin, h, w, cout, k, s, p) in &cases {
                for (relu_before, relu) in [(false, true), (false, false), (true, false)] {
                    let what = format!(
                        "{dt:?} {:?} relu before {relu_before} after {relu}",
                        (n, cin, h, w, cout, k, s, p)
                    );
                    let v = |shape: &[usize]| Var::from_tensor(&randn(shape, dt)).unwrap();
                    let (x, wt, b, g, be) = (
                        v(&[n, cin, h, w]),
                        v(&[cout, cin, k, k]),
                        v(&[cout]),
                        v(&[cout]),
                        v(&[cout]),
                    );
                    let (fused, fs) = conv_bn_relu(
                        x.as_tensor(),
                        wt.as_tensor(),
                        b.as_tensor(),
                        g.as_tensor(),
                        be.as_tensor(),
                        s,
                        p,
                        1e-5,
                        relu_before,
                        relu,
                    )
                    .unwrap();
                    let z = conv2d(
                        x.as_tensor(),
                        wt.as_tensor(),
                        Some(b.as_tensor()),
                        s,
                        p,
                        relu_before,
                    )
                    .unwrap();
                    let (sep, ss) =
                        batch_norm(&z, g.as_tensor(), be.as_tensor(), 1e-5, relu, None).unwrap();
                    let ss = ss.unwrap();
                    assert_eq!((&fs.mean, &fs.var), (&ss.mean, &ss.var), "{what}: stats");
                    assert_eq!(max_rel(&fused, &sep), 0.0, "{what}: forward");
                    let r = randn(sep.dims(), dt);
                    let vars = [&x, &wt, &b, &g, &be];
                    let gf = grads(&fused, &r, &vars);
                    let gs = grads(&sep, &r, &vars);
                    for (i, (a, c)) in gf.iter().zip(&gs).enumerate() {
                        let e = max_rel(a.as_ref().unwrap(), c.as_ref().unwrap());
                        assert_eq!(e, 0.0, "{what}: gradient {i} differs by {e}");
                    }
                }
            }
        }
    }
}
