//! Convolution (+ bias, + optional ReLU) as im2col + `gemm` per sample, with its backward.

use super::*;

/// Shape of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geom {
    pub n: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Geom {
    /// The geometry of a `k`x`k` convolution with `cout` outputs on the `[N, cin, H, W]`
    /// input `lx`; an error (naming `op`) when the padded input is smaller than the kernel.
    pub(super) fn of_input(
        op: &str,
        lx: &Layout,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        let (n, cin, h, w) = lx.shape().dims4()?;
        if h + 2 * pad < k || w + 2 * pad < k {
            bail!(
                "{op}: input {:?} smaller than the {k}x{k} kernel (padding {pad})",
                lx.dims()
            );
        }
        Ok(Geom {
            n,
            cin,
            h,
            w,
            cout,
            k,
            stride,
            pad,
        })
    }

    pub(super) fn oh(&self) -> usize {
        (self.h + 2 * self.pad - self.k) / self.stride + 1
    }
    pub(super) fn ow(&self) -> usize {
        (self.w + 2 * self.pad - self.k) / self.stride + 1
    }
    pub(super) fn ohw(&self) -> usize {
        self.oh() * self.ow()
    }
    /// Rows of the im2col matrix.
    pub(super) fn kk(&self) -> usize {
        self.cin * self.k * self.k
    }
    pub(super) fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }
    /// Valid output columns `[lo, hi)` for kernel column offset `kw`: `0 <= o*s + kw - p < w`.
    pub(super) fn valid(&self, kw: usize, len_out: usize, len_in: usize) -> (usize, usize) {
        let off = kw as isize - self.pad as isize;
        let s = self.stride as isize;
        let lo = if off >= 0 { 0 } else { ((-off) + s - 1) / s };
        let last = len_in as isize - 1 - off;
        let hi = if last < 0 {
            0
        } else {
            (last / s + 1).min(len_out as isize)
        };
        (lo.max(0) as usize, hi.max(lo).max(0) as usize)
    }
}

/// im2col of one sample: `col[(ci*k + kh)*k + kw][oh*ow + o]`.
pub(super) fn im2col<T: Lane>(x: &[T], g: &Geom, col: &mut [T]) {
    if g.stride == 1 && g.ow() == g.w && g.oh() == g.h {
        return im2col_same(x, g, col);
    }
    let (oh, ow, k, s) = (g.oh(), g.ow(), g.k, g.stride);
    let ohw = oh * ow;
    // Each input row split into `s` phase rows (phase `p` holds columns p, p+s, p+2s, ..):
    // output column `o` of kernel column `kw` reads phase `(kw-pad) mod s` at `o + (kw-pad)
    // div s`, so every row of `col` is a run of block copies instead of a strided gather.
    let wp = g.w.div_ceil(s);
    let phases: Vec<T>;
    let (src_all, row_len): (&[T], usize) = if s == 1 {
        (x, g.w)
    } else {
        let mut ph = vec![zero::<T>(); g.cin * g.h * s * wp];
        for (src, dst) in x.chunks_exact(g.w).zip(ph.chunks_exact_mut(s * wp)) {
            for p in 0..s.min(g.w) {
                for (d, &v) in dst[p * wp..(p + 1) * wp]
                    .iter_mut()
                    .zip(src[p..].iter().step_by(s))
                {
                    *d = v;
                }
            }
        }
        phases = ph;
        (&phases, s * wp)
    };
    for ci in 0..g.cin {
        let plane = &src_all[ci * g.h * row_len..(ci + 1) * g.h * row_len];
        for kh in 0..k {
            let (rlo, rhi) = g.valid(kh, oh, g.h);
            for kw in 0..k {
                let (lo, hi) = g.valid(kw, ow, g.w);
                let off = kw as isize - g.pad as isize;
                // Phase and shift of this kernel column (for s == 1: phase 0, shift off).
                let (p, q) = (
                    off.rem_euclid(s as isize) as usize,
                    off.div_euclid(s as isize),
                );
                let row = &mut col[((ci * k + kh) * k + kw) * ohw..][..ohw];
                row[..rlo * ow].fill(zero());
                row[rhi * ow..].fill(zero());
                for o_r in rlo..rhi {
                    let ih = o_r * s + kh - g.pad;
                    let dst = &mut row[o_r * ow..(o_r + 1) * ow];
                    dst[..lo].fill(zero());
                    dst[hi..].fill(zero());
                    if lo < hi {
                        let first = ih * row_len + p * if s == 1 { 0 } else { wp };
                        let j0 = (lo as isize + q) as usize;
                        dst[lo..hi].copy_from_slice(&plane[first + j0..first + j0 + (hi - lo)]);
                    }
                }
            }
        }
    }
}

/// [`im2col`] of a stride-1 "same" convolution: each row of `col` is the input plane shifted
/// by a constant offset, so it is one block copy plus zeroed borders.
pub(super) fn im2col_same<T: Lane>(x: &[T], g: &Geom, col: &mut [T]) {
    let (h, w, k) = (g.h, g.w, g.k);
    let hw = h * w;
    for ci in 0..g.cin {
        let plane = &x[ci * hw..(ci + 1) * hw];
        for kh in 0..k {
            let (rlo, rhi) = g.valid(kh, h, h);
            for kw in 0..k {
                let (lo, hi) = g.valid(kw, w, w);
                let row = &mut col[((ci * k + kh) * k + kw) * hw..][..hw];
                row[..rlo * w].fill(zero());
                row[rhi * w..].fill(zero());
                if rlo >= rhi || lo >= hi {
                    row[rlo * w..rhi * w].fill(zero());
                    continue;
                }
                // dst index d reads src index d + off.
                let off =
                    (kh as isize - g.pad as isize) * w as isize + kw as isize - g.pad as isize;
                let d0 = rlo * w + lo;
                let d1 = (rhi - 1) * w + hi;
                let s0 = (d0 as isize + off) as usize;
                row[d0..d1].copy_from_slice(&plane[s0..s0 + (d1 - d0)]);
                // Columns outside [lo, hi) wrap to the neighbouring row: zero them.
                if lo > 0 || hi < w {
                    for r in rlo..rhi {
                        row[r * w..r * w + lo].fill(zero());
                        row[r * w + hi..(r + 1) * w].fill(zero());
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds `col` into the sample gradient `dx`.
pub(super) fn col2im_add<T: Lane>(col: &[T], g: &Geom, dx: &mut [T]) {
    let (oh, ow, k, s) = (g.oh(), g.ow(), g.k, g.stride);
    let ohw = oh * ow;
    for ci in 0..g.cin {
        let plane = &mut dx[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for kh in 0..k {
            let (rlo, rhi) = g.valid(kh, oh, g.h);
            for kw in 0..k {
                let (lo, hi) = g.valid(kw, ow, g.w);
                let row = &col[((ci * k + kh) * k + kw) * ohw..][..ohw];
                for o_r in rlo..rhi {
                    let ih = o_r * s + kh - g.pad;
                    let dst = &mut plane[ih * g.w..(ih + 1) * g.w];
                    let src = &row[o_r * ow..(o_r + 1) * ow];
                    if lo < hi {
                        let first = lo * s + kw - g.pad;
                        for j in 0..hi - lo {
                            dst[first + j * s] += src[lo + j];
                        }
                    }
                }
            }
        }
    }
}

/// `y = W * im2col(x) (+ bias) (relu)` for one sample; `y` is `[cout, oh*ow]`.
pub(super) fn conv_sample<T: Lane>(
    x: &[T],
    g: &Geom,
    w: &[T],
    bias: Option<&[T]>,
    col: &mut [T],
    y: &mut [T],
    relu: bool,
) {
    let (kk, ohw) = (g.kk(), g.ohw());
    let rhs: &[T] = if g.is_pointwise() {
        x
    } else {
        im2col(x, g, col);
        col
    };
    if let Some(b) = bias {
        for (co, &bv) in b.iter().enumerate() {
            y[co * ohw..(co + 1) * ohw].fill(bv);
        }
    }
    mm(
        g.cout,
        ohw,
        kk,
        y,
        (ohw, 1),
        bias.is_some(),
        w,
        (kk, 1),
        rhs,
        (ohw, 1),
    );
    if relu {
        for v in y.iter_mut() {
            *v = T::gate(*v, *v);
        }
    }
}

pub(super) fn conv_forward<T: Lane>(
    x: &[T],
    w: &[T],
    b: Option<&[T]>,
    g: &Geom,
    relu: bool,
) -> Vec<T> {
    let (per_x, per_y) = (g.cin * g.h * g.w, g.cout * g.ohw());
    let mut y = filled_later::<T>(g.n * per_y);
    let (_, len) = chunks(g.n);
    let col_len = if g.is_pointwise() {
        0
    } else {
        g.kk() * g.ohw()
    };
    y.par_chunks_mut(len * per_y)
        .enumerate()
        .for_each(|(c, ys)| {
            let mut col = filled_later::<T>(col_len);
            for (j, yn) in ys.chunks_mut(per_y).enumerate() {
                let s = c * len + j;
                conv_sample(&x[s * per_x..(s + 1) * per_x], g, w, b, &mut col, yn, relu);
            }
        });
    y
}

/// How the gradient reaching a convolution's output is formed from the incoming one, one
/// sample at a time (so that it never exists for the whole batch).
pub(super) enum DyMap<'a, T> {
    /// Unchanged.
    Plain,
    /// Gated by a fused ReLU's output `y > 0`.
    Relu(&'a [T]),
    /// Through a fused training-mode BatchNorm (+ ReLU) whose input is `z`: per channel
    /// `dz = a*g + c1*z + c0` with `g = dy`, gated by `z*ga + gb > 0` when a ReLU follows
    /// the BatchNorm; `dz` gated by `z > 0` when `pre_relu` (a ReLU made `z`).
    Bn {
        z: &'a [T],
        coef: &'a [(T, T, T)],
        gates: Option<&'a [(T, T)]>,
        pre_relu: bool,
    },
}

impl<T: Lane> DyMap<'_, T> {
    /// Writes sample `s`'s output gradient into `buf` (`[cout, ohw]`) and returns true, or
    /// returns false when it is `dy_s` unchanged.
    pub(super) fn sample(&self, s: usize, dy_s: &[T], buf: &mut [T], ohw: usize) -> bool {
        let per = dy_s.len();
        match self {
            DyMap::Plain => false,
            DyMap::Relu(y) => {
                for ((o, &d), &yv) in buf.iter_mut().zip(dy_s).zip(&y[s * per..(s + 1) * per]) {
                    *o = T::gate(yv, d);
                }
                true
            }
            DyMap::Bn {
                z,
                coef,
                gates,
                pre_relu,
            } => {
                let zs = &z[s * per..(s + 1) * per];
                for (ch, ((o, d), zc)) in buf
                    .chunks_exact_mut(ohw)
                    .zip(dy_s.chunks_exact(ohw))
                    .zip(zs.chunks_exact(ohw))
                    .enumerate()
                {
                    let (a, c1, c0) = coef[ch];
                    match gates {
                        Some(gt) => {
                            let (ga, gb) = gt[ch];
                            for ((o, &g), &zv) in o.iter_mut().zip(d).zip(zc) {
                                let g = T::gate(zv * ga + gb, g);
                                let v = a * g + c1 * zv + c0;
                                *o = if *pre_relu { T::gate(zv, v) } else { v };
                            }
                        }
                        None => {
                            for ((o, &g), &zv) in o.iter_mut().zip(d).zip(zc) {
                                let v = a * g + c1 * zv + c0;
                                *o = if *pre_relu { T::gate(zv, v) } else { v };
                            }
                        }
                    }
                }
                true
            }
        }
    }
}

/// Gradients of a convolution, `[dx (when asked) | dW | db]` flattened, followed by `tail`
/// zeros (room for a fused op's other gradients).
pub(super) fn conv_backward<T: Lane>(
    x: &[T],
    w: &[T],
    dy: &[T],
    dmap: &DyMap<'_, T>,
    g: &Geom,
    need_dx: bool,
    tail: usize,
) -> Vec<T> {
    let (per_x, ohw, kk) = (g.cin * g.h * g.w, g.ohw(), g.kk());
    let per_y = g.cout * ohw;
    let (nchunks, len) = reduction_chunks(g.n);
    // dx of a stride-1 convolution is the convolution of dy with the flipped, transposed
    // kernel (padding k-1-p): a gather, written once, instead of a scatter.
    let transposed = need_dx && g.stride == 1 && g.pad < g.k;
    let (gt, wt) = if transposed {
        let gt = Geom {
            n: g.n,
            cin: g.cout,
            h: g.oh(),
            w: g.ow(),
            cout: g.cin,
            k: g.k,
            stride: 1,
            pad: g.k - 1 - g.pad,
        };
        let k = g.k;
        let mut wt = vec![zero::<T>(); w.len()];
        for co in 0..g.cout {
            for ci in 0..g.cin {
                for kh in 0..k {
                    for kw in 0..k {
                        wt[((ci * g.cout + co) * k + kh) * k + kw] =
                            w[((co * g.cin + ci) * k + (k - 1 - kh)) * k + (k - 1 - kw)];
                    }
                }
            }
        }
        (Some(gt), wt)
    } else {
        (None, Vec::new())
    };
    let dx_len = if need_dx { g.n * per_x } else { 0 };
    let mut out = filled_later::<T>(dx_len + g.cout * kk + g.cout + tail);
    let (dx_all, dwb) = out.split_at_mut(dx_len);
    dwb.fill(zero());
    let dwb = &mut dwb[..g.cout * kk + g.cout];
    let work = |c: usize, dxs: Option<&mut [T]>| -> Vec<T> {
        // Per chunk: [dW | db] partial sums.
        let mut acc = vec![zero::<T>(); g.cout * kk + g.cout];
        let col_len = if g.is_pointwise() { 0 } else { kk * ohw };
        let mut col = filled_later::<T>(col_len);
        let mut gbuf = filled_later::<T>(if matches!(dmap, DyMap::Plain) {
            0
        } else {
            per_y
        });
        let tcol_len = gt.as_ref().map_or(0, |t| {
            if t.is_pointwise() {
                0
            } else {
                t.kk() * t.ohw()
            }
        });
        let mut tcol = filled_later::<T>(tcol_len);
        let mut dcol = filled_later::<T>(if need_dx && !transposed && !g.is_pointwise() {
            kk * ohw
        } else {
            0
        });
        let mut dxs = dxs;
        let end = ((c + 1) * len).min(g.n);
        for s in c * len..end {
            let xs = &x[s * per_x..(s + 1) * per_x];
            let mut gs = &dy[s * per_y..(s + 1) * per_y];
            if dmap.sample(s, gs, &mut gbuf, ohw) {
                gs = &gbuf;
            }
            let (dw, db) = acc.split_at_mut(g.cout * kk);
            for (co, d) in db.iter_mut().enumerate() {
                *d += T::from_f64(sum(&gs[co * ohw..(co + 1) * ohw]));
            }
            // dW += dy_s (cout x ohw) * col_s^T (ohw x kk).
            let colr: &[T] = if g.is_pointwise() {
                xs
            } else {
                im2col(xs, g, &mut col);
                &col
            };
            // As dW^T (kk x cout) = col_s * dy_s^T: the long side (kk) is gemm's row
            // dimension, which its microkernels tile best.
            mm(
                kk,
                g.cout,
                ohw,
                dw,
                (1, kk),
                true,
                colr,
                (ohw, 1),
                gs,
                (1, ohw),
            );
            if let Some(dxs) = dxs.as_deref_mut() {
                let dxn = &mut dxs[(s - c * len) * per_x..(s - c * len + 1) * per_x];
                if let Some(gt) = &gt {
                    conv_sample(gs, gt, &wt, None, &mut tcol, dxn, false);
                } else if g.is_pointwise() {
                    // dx = W^T dy.
                    mm(
                        g.cin,
                        ohw,
                        g.cout,
                        dxn,
                        (ohw, 1),
                        false,
                        w,
                        (1, kk),
                        gs,
                        (ohw, 1),
                    );
                } else {
                    mm(
                        kk,
                        ohw,
                        g.cout,
                        &mut dcol,
                        (ohw, 1),
                        false,
                        w,
                        (1, kk),
                        gs,
                        (ohw, 1),
                    );
                    dxn.fill(zero());
                    col2im_add(&dcol, g, dxn);
                }
            }
        }
        acc
    };
    let partials: Vec<Vec<T>> = if need_dx {
        dx_all
            .par_chunks_mut(len * per_x)
            .enumerate()
            .map(|(c, dxs)| work(c, Some(dxs)))
            .collect()
    } else {
        (0..nchunks)
            .into_par_iter()
            .map(|c| work(c, None))
            .collect()
    };
    for p in partials {
        for (o, v) in dwb.iter_mut().zip(p) {
            *o += v;
        }
    }
    out
}

/// `conv2d(x, w) + b`, optionally followed by ReLU, on `[N, cin, H, W]`.
pub(crate) struct ConvOp {
    pub stride: usize,
    pub pad: usize,
    pub relu: bool,
    /// Whether the bias argument is a real parameter (else a constant zero: no gradient).
    pub has_bias: bool,
}

impl ConvOp {
    pub(super) fn geom(&self, lx: &Layout, lw: &Layout) -> Result<Geom> {
        let (_, cin, _, _) = lx.shape().dims4()?;
        let (cout, wcin, k, k2) = lw.shape().dims4()?;
        if wcin != cin || k != k2 {
            bail!(
                "conv: input {:?} does not fit kernel {:?}",
                lx.dims(),
                lw.dims()
            );
        }
        Geom::of_input("conv", lx, cout, k, self.stride, self.pad)
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
        let g = self.geom(l1, l2)?;
        let x = slice::<T>(s1, l1, "conv")?;
        let w = slice::<T>(s2, l2, "conv")?;
        let b = slice::<T>(s3, l3, "conv")?;
        let y = conv_forward(x, w, self.has_bias.then_some(b), &g, self.relu);
        Ok((
            T::to_cpu_storage_owned(y),
            Shape::from((g.n, g.cout, g.oh(), g.ow())),
        ))
    }
}

impl CustomOp3 for ConvOp {
    fn name(&self) -> &'static str {
        "mer-conv2d"
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
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let need_dx = x.track_op();
        let op = ConvBwdOp {
            stride: self.stride,
            pad: self.pad,
            need_dx,
            relu_out: self.relu.then(|| res.clone()),
        };
        let grad = grad.contiguous()?;
        let flat = x.apply_op3_no_bwd(w, &grad, &op)?;
        let (nx, nw, nb) = (
            if need_dx { x.elem_count() } else { 0 },
            w.elem_count(),
            b.elem_count(),
        );
        let dx = if need_dx {
            Some(flat.narrow(0, 0, nx)?.reshape(x.shape())?)
        } else {
            None
        };
        let dw = flat.narrow(0, nx, nw)?.reshape(w.shape())?;
        let db = (self.has_bias && b.track_op())
            .then(|| flat.narrow(0, nx + nw, nb))
            .transpose()?;
        Ok((dx, Some(dw), db))
    }
}

/// Backward of [`ConvOp`] on `(x, w, dy)`: `[dx | dW | db]` flattened.
pub(super) struct ConvBwdOp {
    pub(super) stride: usize,
    pub(super) pad: usize,
    pub(super) need_dx: bool,
    /// The forward output, when a ReLU was fused (its mask gates the gradient).
    pub(super) relu_out: Option<Tensor>,
}

impl ConvBwdOp {
    pub(super) fn run<T: Lane>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let fwd = ConvOp {
            stride: self.stride,
            pad: self.pad,
            relu: false,
            has_bias: true,
        };
        let g = fwd.geom(l1, l2)?;
        let x = slice::<T>(s1, l1, "conv-bwd")?;
        let w = slice::<T>(s2, l2, "conv-bwd")?;
        let dy = slice::<T>(s3, l3, "conv-bwd")?;
        let out = match &self.relu_out {
            Some(y) => with_slice::<T, _>(y, "conv-bwd", |y| {
                conv_backward(x, w, dy, &DyMap::Relu(y), &g, self.need_dx, 0)
            })?,
            None => conv_backward(x, w, dy, &DyMap::Plain, &g, self.need_dx, 0),
        };
        let len = out.len();
        Ok((T::to_cpu_storage_owned(out), Shape::from(len)))
    }
}

impl CustomOp3 for ConvBwdOp {
    fn name(&self) -> &'static str {
        "mer-conv2d-bwd"
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

/// `conv2d(x, w, padding, stride) + b` (and ReLU when `relu`), on the fast kernels.
/// `b` is `None` for a bias-free convolution.
pub(crate) fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    pad: usize,
    relu: bool,
) -> Result<Tensor> {
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    let has_bias = b.is_some();
    let b = match b {
        Some(b) => b.contiguous()?,
        None => Tensor::zeros(w.dim(0)?, w.dtype(), w.device())?,
    };
    let op = ConvOp {
        stride,
        pad,
        relu,
        has_bias,
    };
    x.apply_op3(&w, &b, op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::*;
    use candle_core::Var;

    #[test]
    fn conv_matches_candle_forward_and_backward() {
        // (n, cin, h, w, cout, k, stride, pad): odd sizes, the stem, pointwise, stride 2.
        let cases = [
            (2, 3, 9, 7, 4, 3, 1, 1),
            (2, 3, 13, 10, 5, 7, 2, 3),
            (2, 3, 14, 11, 8, 7, 2, 3),
            (3, 5, 6, 5, 2, 1, 1, 0),
            (2, 2, 8, 9, 3, 3, 2, 1),
            (2, 2, 11, 10, 3, 3, 3, 1),
            (1, 3, 12, 13, 2, 5, 3, 0),
            (1, 4, 5, 6, 3, 3, 1, 0),
            (5, 2, 4, 4, 1, 3, 1, 2),
        ];
        for dt in [DType::F64, DType::F32] {
            let tol = if dt == DType::F64 { 1e-12 } else { 2e-5 };
            for &(n, cin, h, w, cout, k, s, p) in &cases {
                for (bias, relu) in [(true, false), (false, false), (true, true)] {
                    let x = Var::from_tensor(&randn(&[n, cin, h, w], dt)).unwrap();
                    let wt = Var::from_tensor(&randn(&[cout, cin, k, k], dt)).unwrap();
                    let b = Var::from_tensor(&randn(&[cout], dt)).unwrap();
                    let fast = conv2d(
                        x.as_tensor(),
                        wt.as_tensor(),
                        bias.then_some(b.as_tensor()),
                        s,
                        p,
                        relu,
                    )
                    .unwrap();
                    // candle's conv2d backward fails when the stride does not divide the
                    // padded extent: the reference pads explicitly and drops the trailing
                    // rows/columns that no output reads.
                    let xp = x
                        .as_tensor()
                        .pad_with_zeros(2, p, p)
                        .unwrap()
                        .pad_with_zeros(3, p, p)
                        .unwrap();
                    let (hp, wp) = (h + 2 * p, w + 2 * p);
                    let xp = xp
                        .narrow(2, 0, hp - (hp - k) % s)
                        .unwrap()
                        .narrow(3, 0, wp - (wp - k) % s)
                        .unwrap();
                    let mut plain = xp.conv2d(wt.as_tensor(), 0, s, 1, 1).unwrap();
                    if bias {
                        plain = plain
                            .broadcast_add(&b.as_tensor().reshape((1, cout, 1, 1)).unwrap())
                            .unwrap();
                    }
                    if relu {
                        plain = plain_relu(plain);
                    }
                    let what = format!(
                        "{dt:?} case {:?} bias {bias} relu {relu}",
                        (n, cin, h, w, cout, k, s, p)
                    );
                    assert!(
                        max_rel(&fast, &plain) < tol,
                        "{what}: forward {}",
                        max_rel(&fast, &plain)
                    );
                    let r = randn(plain.dims(), dt);
                    let gf = grads(&fast, &r, &[&x, &wt, &b]);
                    let gp = grads(&plain, &r, &[&x, &wt, &b]);
                    for (i, (a, c)) in gf.iter().zip(&gp).enumerate() {
                        match (a, c) {
                            (Some(a), Some(c)) => {
                                let e = max_rel(a, c);
                                assert!(e < tol, "{what}: gradient {i} differs by {e}");
                            }
                            (None, None) => {}
                            _ => panic!("{what}: gradient {i} present in one graph only"),
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn conv_skips_the_input_gradient_of_data() {
        let x = randn(&[2, 3, 9, 9], DType::F32);
        let w = Var::from_tensor(&randn(&[4, 3, 3, 3], DType::F32)).unwrap();
        let y = conv2d(&x, w.as_tensor(), None, 2, 1, false).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        assert!(g.get(&x).is_none());
        assert!(g.get(w.as_tensor()).is_some());
    }
}
