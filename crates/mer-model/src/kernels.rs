//! Fused CPU kernels as candle custom ops, each with its own backward pass: convolution
//! (+ bias, + optional ReLU) as im2col + `gemm` per sample, training- and evaluation-mode
//! BatchNorm (+ optional ReLU), convolution + training-mode BatchNorm (+ ReLU) as one op
//! ([`conv_bn_relu`]), and max pool 2x2 (of a sum of two tensors, the residual join). They
//! keep candle tensors, `Var`s and the optimizer; only the arithmetic moves here.
//!
//! Work is split across the batch on the current rayon pool (one contiguous chunk of samples
//! per thread, scratch buffers allocated once per chunk); `gemm` itself runs single-threaded.
//! f32 and f64 (for gradient checks) are supported; callers fall back to plain candle ops
//! for other dtypes and devices ([`usable`]).

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Storage,
    Tensor, WithDType,
};
use rayon::prelude::*;

/// The body of every op's `cpu_fwd`: `$call` with the type alias `$t` bound to f32 or f64
/// by the dtype of the storage `$s`, else an error naming the op and the dtype found.
macro_rules! by_float {
    ($s:expr, $name:expr, $t:ident => $call:expr) => {
        match $s {
            CpuStorage::F32(_) => {
                type $t = f32;
                $call
            }
            CpuStorage::F64(_) => {
                type $t = f64;
                $call
            }
            other => bail!("{}: expected f32 or f64, found {:?}", $name, other.dtype()),
        }
    };
}

mod fused;
pub(crate) use fused::conv_bn_relu;

/// The float types of the fast kernels (f32, f64), with a branch-free ReLU gate: the
/// compiler turns a float `if` into a branch in these loops (mispredicted half the time on
/// activations), and a bit mask into vector code.
pub(crate) trait Lane: WithDType {
    /// `v` where `t > 0`, else `+0` (also for a NaN `t`, as `if t > 0 { v } else { 0 }`).
    fn gate(t: Self, v: Self) -> Self;
}

impl Lane for f32 {
    #[inline(always)]
    fn gate(t: f32, v: f32) -> f32 {
        f32::from_bits(v.to_bits() & (u32::from(t > 0.0)).wrapping_neg())
    }
}

impl Lane for f64 {
    #[inline(always)]
    fn gate(t: f64, v: f64) -> f64 {
        f64::from_bits(v.to_bits() & (u64::from(t > 0.0)).wrapping_neg())
    }
}

/// Whether the fast kernels handle `t` (CPU, f32 or f64).
pub(crate) fn usable(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// Whether the fast kernels are switched off (`MER_MODEL_PLAIN=1`: plain candle ops, for
/// comparisons). Read once.
pub(crate) fn disabled() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OFF.get_or_init(|| std::env::var("MER_MODEL_PLAIN").is_ok_and(|v| v == "1"))
        || PLAIN.with(|p| p.get())
}

thread_local! {
    static PLAIN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the fast kernels off on this thread (plain candle graphs), for comparisons.
pub fn with_plain_ops<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            PLAIN.with(|p| p.set(self.0));
        }
    }
    let _reset = Reset(PLAIN.with(|p| p.replace(true)));
    f()
}

/// Keeps freed tensor memory in the process instead of returning it to the kernel: a training
/// step frees and reallocates the same few dozen multi-megabyte buffers, and with glibc's
/// defaults each of them is a fresh `mmap` whose pages the kernel zeroes again (measured:
/// a large share of a step). Sets glibc's mmap threshold to 32 MiB (its maximum), a 256 MiB
/// top pad and no trimming, once per process; `MER_MODEL_KEEP_MALLOC=1` leaves malloc alone.
/// A no-op on other C libraries.
pub fn tune_allocator() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var("MER_MODEL_KEEP_MALLOC").is_ok_and(|v| v == "1") {
            return;
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator parameters; it is thread-safe in glibc.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            libc::mallopt(libc::M_TOP_PAD, 256 << 20);
        }
    });
}

fn slice<'a, T: Lane>(s: &'a CpuStorage, l: &Layout, op: &'static str) -> Result<&'a [T]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or(candle_core::Error::RequiresContiguous { op })?;
    Ok(&T::cpu_storage_as_slice(s)?[a..b])
}

/// Runs `f` on the CPU slice of a tensor held by an op (not one of its arguments).
fn with_slice<T: Lane, R>(t: &Tensor, op: &'static str, f: impl FnOnce(&[T]) -> R) -> Result<R> {
    let (st, l) = t.storage_and_layout();
    match &*st {
        Storage::Cpu(cs) => Ok(f(slice::<T>(cs, l, op)?)),
        _ => bail!("{op}: expected a CPU tensor"),
    }
}

fn zero<T: Lane>() -> T {
    T::from_f64(0.0)
}

/// A buffer of `len` values that the caller overwrites entirely. Zeroed (sound and cheap
/// once freed memory is reused, see [`tune_allocator`]); one place to change should an
/// uninitialised-buffer API become worth it.
fn filled_later<T: Lane>(len: usize) -> Vec<T> {
    vec![zero::<T>(); len]
}

/// Number of chunks to split `n` samples into, and the chunk length: one chunk on one
/// thread, else about four per thread, so that work stealing evens out threads the OS
/// preempts (the machines are shared).
fn chunks(n: usize) -> (usize, usize) {
    let nt = rayon::current_num_threads();
    let want = if nt <= 1 { 1 } else { 4 * nt };
    let len = n.div_ceil(want.clamp(1, n.max(1))).max(1);
    (n.div_ceil(len).max(1), len)
}

/// `dst (m x n) [+]= a (m x k) * b (k x n)`; every operand given with its (row, column)
/// strides in elements.
#[allow(clippy::too_many_arguments)]
fn mm<T: Lane>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    (d_rs, d_cs): (usize, usize),
    accumulate: bool,
    a: &[T],
    (a_rs, a_cs): (usize, usize),
    b: &[T],
    (b_rs, b_cs): (usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        dst.len() > (m - 1) * d_rs + (n - 1) * d_cs,
        "mm: destination too short"
    );
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                for c in 0..n {
                    dst[r * d_rs + c * d_cs] = zero();
                }
            }
        }
        return;
    }
    assert!(
        a.len() > (m - 1) * a_rs + (k - 1) * a_cs,
        "mm: left operand too short"
    );
    assert!(
        b.len() > (k - 1) * b_rs + (n - 1) * b_cs,
        "mm: right operand too short"
    );
    let one = T::from_f64(1.0);
    // SAFETY: the slices cover every element the strides reach (checked above), and `dst`
    // does not alias `a` or `b` (a `&mut` and two `&` slices).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            d_cs as isize,
            d_rs as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            one,
            one,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Convolution
// ---------------------------------------------------------------------------------------------

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
    fn of_input(
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

    fn oh(&self) -> usize {
        (self.h + 2 * self.pad - self.k) / self.stride + 1
    }
    fn ow(&self) -> usize {
        (self.w + 2 * self.pad - self.k) / self.stride + 1
    }
    fn ohw(&self) -> usize {
        self.oh() * self.ow()
    }
    /// Rows of the im2col matrix.
    fn kk(&self) -> usize {
        self.cin * self.k * self.k
    }
    fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }
    /// Valid output columns `[lo, hi)` for kernel column offset `kw`: `0 <= o*s + kw - p < w`.
    fn valid(&self, kw: usize, len_out: usize, len_in: usize) -> (usize, usize) {
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
fn im2col<T: Lane>(x: &[T], g: &Geom, col: &mut [T]) {
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
fn im2col_same<T: Lane>(x: &[T], g: &Geom, col: &mut [T]) {
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
fn col2im_add<T: Lane>(col: &[T], g: &Geom, dx: &mut [T]) {
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
fn conv_sample<T: Lane>(
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

fn conv_forward<T: Lane>(x: &[T], w: &[T], b: Option<&[T]>, g: &Geom, relu: bool) -> Vec<T> {
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
enum DyMap<'a, T> {
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
    fn sample(&self, s: usize, dy_s: &[T], buf: &mut [T], ohw: usize) -> bool {
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
fn conv_backward<T: Lane>(
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
    let (nchunks, len) = chunks(g.n);
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
    fn geom(&self, lx: &Layout, lw: &Layout) -> Result<Geom> {
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

    fn fwd<T: Lane>(
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
struct ConvBwdOp {
    stride: usize,
    pad: usize,
    need_dx: bool,
    /// The forward output, when a ReLU was fused (its mask gates the gradient).
    relu_out: Option<Tensor>,
}

impl ConvBwdOp {
    fn run<T: Lane>(
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

// ---------------------------------------------------------------------------------------------
// BatchNorm
// ---------------------------------------------------------------------------------------------

/// Sum of a slice, eight partial sums (vectorisable), in `T` then widened.
fn sum<T: Lane>(s: &[T]) -> f64 {
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
fn sum_sq_dev<T: Lane>(s: &[T], m: T) -> f64 {
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
fn sum_grad<T: Lane>(dy: &[T], x: &[T], gate: Option<(T, T)>, m: T) -> (f64, f64) {
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
fn bn_affine<T: Lane>(gamma: &[T], beta: &[T], mean: &[f64], var: &[f64], eps: f64) -> Vec<(T, T)> {
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
fn bn_batch_stats<T: Lane>(x: &[T], (n, c, hw): (usize, usize, usize)) -> (Vec<f64>, Vec<f64>) {
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
fn bn_apply<T: Lane>(x: &[T], ab: &[(T, T)], hw: usize, relu: bool) -> Vec<T> {
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
type BnBackwardCoefs<T> = (Vec<(T, T, T)>, Vec<(T, T)>);

/// What a BatchNorm backward needs per channel: the `dx = a*g + c1*x + c0` coefficients
/// (`c1 = c0 = 0` in evaluation mode) and `(dgamma, dbeta)`. `gates` are the fused ReLU's
/// `(a, b)` when there is one (see [`bn_affine`]).
#[allow(clippy::too_many_arguments)]
fn bn_backward_coefs<T: Lane>(
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
    stats: Arc<Mutex<BnBatchStats>>,
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

    fn fwd<T: Lane>(
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
struct BnBwdOp {
    eps: f64,
    train: bool,
    mean: Vec<f64>,
    var: Vec<f64>,
    /// The BatchNorm's bias when a ReLU is fused: the gate `y > 0` is recomputed from `x`.
    relu_beta: Option<Tensor>,
}

impl BnBwdOp {
    fn run<T: Lane>(
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

    fn go<T: Lane>(
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

// ---------------------------------------------------------------------------------------------
// Max pool 2x2 (of a sum)
// ---------------------------------------------------------------------------------------------

/// Index (0..4, row-major) of the first maximum of a window.
#[inline]
fn argmax4<T: PartialOrd + Copy>(v: [T; 4]) -> usize {
    let mut best = 0;
    for i in 1..4 {
        if v[i] > v[best] {
            best = i;
        }
    }
    best
}

#[inline]
fn window<T: Lane>(a: &[T], b: Option<&[T]>, i0: usize, i1: usize) -> [T; 4] {
    match b {
        Some(b) => [
            a[i0] + b[i0],
            a[i0 + 1] + b[i0 + 1],
            a[i1] + b[i1],
            a[i1 + 1] + b[i1 + 1],
        ],
        None => [a[i0], a[i0 + 1], a[i1], a[i1 + 1]],
    }
}

fn pool_fwd<T: Lane>(a: &[T], b: Option<&[T]>, planes: usize, h: usize, w: usize) -> Vec<T> {
    let (ho, wo) = (h / 2, w / 2);
    let mut y = filled_later::<T>(planes * ho * wo);
    if ho * wo == 0 {
        return y;
    }
    let mx = |p: T, q: T| if q > p { q } else { p };
    y.par_chunks_mut(ho * wo).enumerate().for_each(|(p, ys)| {
        let base = p * h * w;
        for (r, yr) in ys.chunks_exact_mut(wo).enumerate() {
            let t0 = base + 2 * r * w;
            let (top, bot) = (&a[t0..t0 + 2 * wo], &a[t0 + w..t0 + w + 2 * wo]);
            match b {
                Some(b) => {
                    let (tb, bb) = (&b[t0..t0 + 2 * wo], &b[t0 + w..t0 + w + 2 * wo]);
                    for (((o, t), u), (tb, ub)) in yr
                        .iter_mut()
                        .zip(top.chunks_exact(2))
                        .zip(bot.chunks_exact(2))
                        .zip(tb.chunks_exact(2).zip(bb.chunks_exact(2)))
                    {
                        *o = mx(
                            mx(t[0] + tb[0], t[1] + tb[1]),
                            mx(u[0] + ub[0], u[1] + ub[1]),
                        );
                    }
                }
                None => {
                    for ((o, t), u) in yr
                        .iter_mut()
                        .zip(top.chunks_exact(2))
                        .zip(bot.chunks_exact(2))
                    {
                        *o = mx(mx(t[0], t[1]), mx(u[0], u[1]));
                    }
                }
            }
        }
    });
    y
}

fn pool_bwd<T: Lane>(
    a: &[T],
    b: Option<&[T]>,
    dy: &[T],
    planes: usize,
    h: usize,
    w: usize,
) -> Vec<T> {
    let (ho, wo) = (h / 2, w / 2);
    let odd = h % 2 == 1 || w % 2 == 1;
    let mut dx = if odd || ho * wo == 0 {
        vec![zero::<T>(); planes * h * w]
    } else {
        filled_later::<T>(planes * h * w)
    };
    if ho * wo == 0 {
        return dx;
    }
    dx.par_chunks_mut(h * w).enumerate().for_each(|(p, d)| {
        let base = p * h * w;
        for r in 0..ho {
            for c in 0..wo {
                let l0 = 2 * r * w + 2 * c;
                let v = window(a, b, base + l0, base + l0 + w);
                let g = dy[(p * ho + r) * wo + c];
                let at = argmax4(v);
                let z = zero::<T>();
                d[l0] = if at == 0 { g } else { z };
                d[l0 + 1] = if at == 1 { g } else { z };
                d[l0 + w] = if at == 2 { g } else { z };
                d[l0 + w + 1] = if at == 3 { g } else { z };
            }
        }
    });
    dx
}

/// Max pool 2x2 stride 2 of `a + b` (`b` optional), `[N, C, H, W] -> [N, C, H/2, W/2]`,
/// odd trailing rows and columns dropped; the gradient goes to the first maximum of each
/// window (row-major), as PyTorch's.
pub(crate) struct PoolOp;

fn pool_dims(l: &Layout) -> Result<(usize, usize, usize, usize)> {
    l.shape().dims4()
}

impl PoolOp {
    fn fwd<T: Lane>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = pool_dims(l1)?;
        let a = slice::<T>(s1, l1, "max-pool")?;
        let b = match s2 {
            Some((s, l)) => {
                if l.dims() != l1.dims() {
                    bail!(
                        "max-pool of a sum: shapes {:?} and {:?} differ",
                        l1.dims(),
                        l.dims()
                    );
                }
                Some(slice::<T>(s, l, "max-pool")?)
            }
            None => None,
        };
        let y = pool_fwd(a, b, n * c, h, w);
        Ok((
            T::to_cpu_storage_owned(y),
            Shape::from((n, c, h / 2, w / 2)),
        ))
    }
}

impl CustomOp1 for PoolOp {
    fn name(&self) -> &'static str {
        "mer-max-pool2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        by_float!(s, CustomOp1::name(self), T => self.fwd::<T>(s, l, None))
    }

    fn bwd(&self, a: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(a.apply_op2_no_bwd(&grad.contiguous()?, &PoolBwdOp)?))
    }
}

impl CustomOp2 for PoolOp {
    fn name(&self) -> &'static str {
        "mer-max-pool2-sum"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        by_float!(s1, CustomOp2::name(self), T => self.fwd::<T>(s1, l1, Some((s2, l2))))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let d = a.apply_op3_no_bwd(b, &grad.contiguous()?, &PoolBwdOp)?;
        Ok((a.track_op().then(|| d.clone()), b.track_op().then_some(d)))
    }
}

/// Backward of [`PoolOp`]: `(a, dy)` or `(a, b, dy)` -> `da` (= `db`).
struct PoolBwdOp;

impl PoolBwdOp {
    fn go<T: Lane>(
        &self,
        a: (&CpuStorage, &Layout),
        b: Option<(&CpuStorage, &Layout)>,
        dy: (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = pool_dims(a.1)?;
        let av = slice::<T>(a.0, a.1, "max-pool-bwd")?;
        let bv = b
            .map(|(s, l)| slice::<T>(s, l, "max-pool-bwd"))
            .transpose()?;
        let g = slice::<T>(dy.0, dy.1, "max-pool-bwd")?;
        let dx = pool_bwd(av, bv, g, n * c, h, w);
        Ok((T::to_cpu_storage_owned(dx), a.1.shape().clone()))
    }
}

impl CustomOp2 for PoolBwdOp {
    fn name(&self) -> &'static str {
        "mer-max-pool2-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        by_float!(s1, CustomOp2::name(self), T => self.go::<T>((s1, l1), None, (s2, l2)))
    }
}

impl CustomOp3 for PoolBwdOp {
    fn name(&self) -> &'static str {
        "mer-max-pool2-sum-bwd"
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
        by_float!(s1, CustomOp3::name(self), T => self.go::<T>((s1, l1), Some((s2, l2)), (s3, l3)))
    }
}

/// Max pool 2x2 of `a` (plus `b` when given) on the fast kernels.
pub(crate) fn max_pool2(a: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let a = a.contiguous()?;
    match b {
        Some(b) => a.apply_op2(&b.contiguous()?, PoolOp),
        None => a.apply_op1(PoolOp),
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
    use candle_core::{Device, Var, D};

    fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
        assert_eq!(a.dims(), b.dims());
        let a = a.to_dtype(DType::F64).unwrap();
        let b = b.to_dtype(DType::F64).unwrap();
        crate::abs_max(&(&a - &b).unwrap()) / crate::abs_max(&a).max(1e-30)
    }

    fn randn(shape: &[usize], dt: DType) -> Tensor {
        Tensor::randn(0f64, 1.0, shape, &Device::Cpu)
            .unwrap()
            .to_dtype(dt)
            .unwrap()
    }

    /// `sum(y * r)` and its gradients with respect to `vars`.
    fn grads(y: &Tensor, r: &Tensor, vars: &[&Var]) -> Vec<Option<Tensor>> {
        let g = (y * r).unwrap().sum_all().unwrap().backward().unwrap();
        vars.iter().map(|v| g.get(v.as_tensor()).cloned()).collect()
    }

    fn plain_relu(y: Tensor) -> Tensor {
        crate::layers::relu(&y).unwrap()
    }

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

    fn plain_bn(x: &Tensor, g: &Tensor, b: &Tensor, running: Option<(&Tensor, &Tensor)>) -> Tensor {
        let c = g.elem_count();
        let (mean, var) = match running {
            Some((m, v)) => (
                m.reshape((1, c, 1, 1)).unwrap(),
                v.reshape((1, c, 1, 1)).unwrap(),
            ),
            None => {
                let m = x.mean_keepdim((0, 2, 3)).unwrap();
                let v = x
                    .broadcast_sub(&m)
                    .unwrap()
                    .sqr()
                    .unwrap()
                    .mean_keepdim((0, 2, 3))
                    .unwrap();
                (m, v)
            }
        };
        x.broadcast_sub(&mean)
            .unwrap()
            .broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(&g.reshape((1, c, 1, 1)).unwrap())
            .unwrap()
            .broadcast_add(&b.reshape((1, c, 1, 1)).unwrap())
            .unwrap()
    }

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

    #[test]
    fn max_pool_matches_candle_forward_and_backward_with_ties() {
        for dt in [DType::F64, DType::F32] {
            for &(n, c, h, w) in &[(2, 3, 7, 9), (1, 2, 4, 4), (3, 1, 5, 2), (1, 1, 1, 3)] {
                for sum in [false, true] {
                    // Rounded values: many tied maxima.
                    let a = Var::from_tensor(&randn(&[n, c, h, w], dt).round().unwrap()).unwrap();
                    let b = Var::from_tensor(&randn(&[n, c, h, w], dt).round().unwrap()).unwrap();
                    if h < 2 || w < 2 {
                        let y = max_pool2(a.as_tensor(), Some(b.as_tensor())).unwrap();
                        assert_eq!(y.dims(), &[n, c, h / 2, w / 2]);
                        continue;
                    }
                    let (fast, plain) = if sum {
                        (
                            max_pool2(a.as_tensor(), Some(b.as_tensor())).unwrap(),
                            crate::layers::max_pool2_plain(
                                &(a.as_tensor() + b.as_tensor()).unwrap(),
                            )
                            .unwrap(),
                        )
                    } else {
                        (
                            max_pool2(a.as_tensor(), None).unwrap(),
                            crate::layers::max_pool2_plain(a.as_tensor()).unwrap(),
                        )
                    };
                    let what = format!("{dt:?} {:?} sum {sum}", (n, c, h, w));
                    assert_eq!(max_rel(&fast, &plain), 0.0, "{what}");
                    if fast.elem_count() == 0 {
                        continue;
                    }
                    let r = randn(plain.dims(), dt);
                    let gf = grads(&fast, &r, &[&a, &b]);
                    let gp = grads(&plain, &r, &[&a, &b]);
                    for (i, (x, y)) in gf.iter().zip(&gp).enumerate() {
                        match (x, y) {
                            (Some(x), Some(y)) => {
                                assert_eq!(max_rel(x, y), 0.0, "{what}: gradient {i}")
                            }
                            (None, None) => {}
                            _ => panic!("{what}: gradient {i} present in one graph only"),
                        }
                    }
                }
            }
        }
        let _ = D::Minus1;
    }
}
