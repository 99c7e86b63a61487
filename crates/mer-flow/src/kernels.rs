//! The inner iteration of Dual TV-L1, as two row-wise half-steps:
//!
//! - A: thresholding (OpenCV `estimateV`), divergence of p (`divergence`), the
//!   primal update (`estimateU`) and the squared update per pixel;
//! - B: forward gradient of u (`forwardGradient`) and the dual update
//!   (`estimateDualVariables`).
//!
//! When a pair is not spread over threads, both run in a single pass down the
//! rows (`sweep`): A of row `y + 1` and B of row `y` together, pixel by pixel,
//! which reads every value the two separate passes would (see `ab_row`); row bands
//! spread over threads run A then B (`phase_a`, `phase_b`).
//!
//! Each pixel is computed with OpenCV's f32 operations in OpenCV's order; the
//! loops are written so that LLVM vectorises them, and compiled for AVX-512,
//! AVX2 and the baseline, chosen at run time. No fused multiply-add is ever
//! formed (Rust does not contract), so every lane rounds as OpenCV's scalar code.
//!
//! The stopping rule compares OpenCV's f32 sum, taken in row order, with
//! `epsilon^2 * W * H`. A sequential f32 sum cannot be vectorised, so the sum
//! is first taken in f64 lanes; only when that is within the f32 sum's
//! worst-case rounding bound of the threshold is the exact row-order f32 sum
//! taken. The decision is therefore always OpenCV's.

use crate::tvl1::{band_rows, Consts};
use rayon::prelude::*;

/// The per-warp fields read by the iteration (warped second image, its gradients, |grad|^2,
/// the constant part of rho; public through `testing`).
pub struct Fields<'a> {
    pub i1wx: &'a [f32],
    pub i1wy: &'a [f32],
    pub grad: &'a [f32],
    pub rho: &'a [f32],
    pub w: usize,
    pub h: usize,
}

/// One inner iteration. Returns an error value on the same side of
/// `scaled_eps` as OpenCV's f32 error (exactly OpenCV's when close to it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn iterate(
    f: &Fields<'_>,
    c: Consts,
    u1: &mut [f32],
    u2: &mut [f32],
    u3: Option<&mut [f32]>,
    p: &mut [Vec<f32>; 6],
    du: &mut [f32],
    scaled_eps: f32,
    par: bool,
) -> f32 {
    let (w, h) = (f.w, f.h);
    let n = w * h;
    let sum64 = match u3 {
        None => {
            let (p11, p12, p21, p22) = split4(p);
            if !par {
                let s = sweep(f, c, p11, p12, p21, p22, u1, u2, &mut du[..n]);
                return decide(s, &du[..n], scaled_eps);
            }
            let s = if par {
                let rows = band_rows(h);
                u1.par_chunks_mut(rows * w)
                    .zip(u2.par_chunks_mut(rows * w))
                    .zip(du[..n].par_chunks_mut(rows * w))
                    .enumerate()
                    .map(|(b, ((a1, a2), d))| {
                        phase_a(f, c, p11, p12, p21, p22, b * rows, a1, a2, d)
                    })
                    .sum()
            } else {
                phase_a(f, c, p11, p12, p21, p22, 0, u1, u2, &mut du[..n])
            };
            let (u1, u2) = (&*u1, &*u2);
            if par {
                let rows = band_rows(h);
                p11[..n]
                    .par_chunks_mut(rows * w)
                    .zip(p12[..n].par_chunks_mut(rows * w))
                    .zip(
                        p21[..n]
                            .par_chunks_mut(rows * w)
                            .zip(p22[..n].par_chunks_mut(rows * w)),
                    )
                    .enumerate()
                    .for_each(|(b, ((q11, q12), (q21, q22)))| {
                        phase_b(c.taut, w, h, u1, u2, b * rows, q11, q12, q21, q22)
                    });
            } else {
                phase_b(
                    c.taut,
                    w,
                    h,
                    u1,
                    u2,
                    0,
                    &mut p11[..n],
                    &mut p12[..n],
                    &mut p21[..n],
                    &mut p22[..n],
                );
            }
            s
        }
        Some(u3) => gamma::iterate(f, c, u1, u2, u3, p, &mut du[..n]),
    };
    decide(sum64, &du[..n], scaled_eps)
}

fn split4(p: &mut [Vec<f32>; 6]) -> (&mut [f32], &mut [f32], &mut [f32], &mut [f32]) {
    let [a, b, c, d, _, _] = p;
    (a, b, c, d)
}

/// The stopping decision on OpenCV's f32 row-order sum (see the module doc).
fn decide(sum64: f64, du: &[f32], scaled_eps: f32) -> f32 {
    let n = du.len() as f64;
    // |fl32_sequential(S) - S| <= (n-1) u S / (1 - (n-1) u) for non-negative terms.
    let u = f64::from(f32::EPSILON) / 2.0;
    let bound = 2.0 * n * u * sum64 + 1e-30;
    let eps = f64::from(scaled_eps);
    if sum64 > eps + bound {
        (sum64 as f32).max(f32::from_bits(scaled_eps.to_bits() + 1))
    } else if sum64 + bound < eps {
        (sum64 as f32).min(scaled_eps)
    } else {
        let mut e = 0.0f32;
        for &v in du {
            e += v;
        }
        e
    }
}

crate::cpu::simd_dispatch!(
    fn phase_a(
        f: &Fields<'_>,
        c: Consts,
        p11: &[f32],
        p12: &[f32],
        p21: &[f32],
        p22: &[f32],
        y0: usize,
        u1: &mut [f32],
        u2: &mut [f32],
        du: &mut [f32],
    ) -> f64 = phase_a_generic
);

/// Backward-difference divergence of row `y` (OpenCV's `divergence`).
#[inline(always)]
pub(crate) fn divergence_row(pa: &[f32], pb: &[f32], w: usize, y: usize, out: &mut [f32]) {
    let ra = &pa[y * w..(y + 1) * w];
    let rb = &pb[y * w..(y + 1) * w];
    let out = &mut out[..w];
    if y == 0 {
        out[0] = ra[0] + rb[0];
        for x in 1..w {
            out[x] = ra[x] - ra[x - 1] + rb[x];
        }
    } else {
        let rbu = &pb[(y - 1) * w..y * w];
        out[0] = ra[0] + rb[0] - rbu[0];
        let (o, a1, a0, b1, bu) = (&mut out[1..], &ra[1..], &ra[..w - 1], &rb[1..], &rbu[1..]);
        for i in 0..w - 1 {
            o[i] = (a1[i] - a0[i]) + (b1[i] - bu[i]);
        }
    }
}

/// OpenCV's thresholding step for one pixel: returns (d1, d2) and whether the
/// point was projected (for the gamma term).
#[inline(always)]
pub(crate) fn threshold(rho: f32, g: f32, ix: f32, iy: f32, l_t: f32) -> (f32, f32, f32) {
    let lg = l_t * g;
    let fi = -rho / g;
    if rho < -l_t * g {
        (l_t * ix, l_t * iy, l_t)
    } else if rho > lg {
        (-l_t * ix, -l_t * iy, -l_t)
    } else if g > f32::EPSILON {
        (fi * ix, fi * iy, fi)
    } else {
        (0.0, 0.0, 0.0)
    }
}

/// Sum of a slice in eight f64 lanes (vectorisable; order-free up to f64 rounding).
#[inline(always)]
pub(crate) fn lanes_sum(v: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let mut it = v.chunks_exact(8);
    for ch in &mut it {
        for l in 0..8 {
            acc[l] += f64::from(ch[l]);
        }
    }
    let mut s: f64 = it.remainder().iter().map(|&x| f64::from(x)).sum();
    for a in acc {
        s += a;
    }
    s
}

/// Phase A of one pixel: thresholding, primal update and squared update, in OpenCV's
/// order; `d1`, `d2` are the divergences of (p11, p12) and (p21, p22) there.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn px(
    c: Consts,
    rc: f32,
    ix: f32,
    iy: f32,
    g: f32,
    d1: f32,
    d2: f32,
    a1: &mut f32,
    a2: &mut f32,
    e: &mut f32,
) {
    let (o1, o2) = (*a1, *a2);
    let rho = rc + (ix * o1 + iy * o2);
    let (t1, t2, _) = threshold(rho, g, ix, iy, c.l_t);
    let v1 = o1 + t1;
    let v2 = o2 + t2;
    let n1 = v1 + c.theta * d1;
    let n2 = v2 + c.theta * d2;
    *a1 = n1;
    *a2 = n2;
    *e = (n1 - o1) * (n1 - o1) + (n2 - o2) * (n2 - o2);
}

/// A row of zeros standing for p12 / p22 above the first row: `b - 0` is `b` exactly, so
/// the first row's divergence `(a[x] - a[x-1]) + b[x]` is the general formula's.
static ZEROS: [f32; 1024] = [0.0; 1024];

/// Phase A of row `y` in place on that row of u1, u2 (`a1`, `a2`), the squared update per
/// pixel into `e`; returns the row's sum (f64 lanes). The divergence is computed inline
/// (no row buffer), with OpenCV's operations and order.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn a_row(
    f: &Fields<'_>,
    c: Consts,
    p11: &[f32],
    p12: &[f32],
    p21: &[f32],
    p22: &[f32],
    y: usize,
    zeros: &[f32],
    a1: &mut [f32],
    a2: &mut [f32],
    e: &mut [f32],
) -> f64 {
    let w = f.w;
    let o = y * w;
    let (ra1, rb1, ra2, rb2) = (
        &p11[o..o + w],
        &p12[o..o + w],
        &p21[o..o + w],
        &p22[o..o + w],
    );
    let (ru1, ru2) = if y > 0 {
        (&p12[o - w..o], &p22[o - w..o])
    } else {
        (&zeros[..w], &zeros[..w])
    };
    let (ix, iy, g, rc) = (
        &f.i1wx[o..o + w],
        &f.i1wy[o..o + w],
        &f.grad[o..o + w],
        &f.rho[o..o + w],
    );
    let (a1, a2, e) = (&mut a1[..w], &mut a2[..w], &mut e[..w]);
    if w == 0 {
        return 0.0;
    }
    px(
        c,
        rc[0],
        ix[0],
        iy[0],
        g[0],
        (ra1[0] + rb1[0]) - ru1[0],
        (ra2[0] + rb2[0]) - ru2[0],
        &mut a1[0],
        &mut a2[0],
        &mut e[0],
    );
    let n = w - 1;
    let (a1, a2, et) = (&mut a1[1..], &mut a2[1..], &mut e[1..]);
    let (ix, iy, g, rc) = (&ix[1..], &iy[1..], &g[1..], &rc[1..]);
    let (ra1p, ra1, rb1, ru1) = (&ra1[..n], &ra1[1..], &rb1[1..], &ru1[1..]);
    let (ra2p, ra2, rb2, ru2) = (&ra2[..n], &ra2[1..], &rb2[1..], &ru2[1..]);
    for x in 0..n {
        let d1 = (ra1[x] - ra1p[x]) + (rb1[x] - ru1[x]);
        let d2 = (ra2[x] - ra2p[x]) + (rb2[x] - ru2[x]);
        px(
            c, rc[x], ix[x], iy[x], g[x], d1, d2, &mut a1[x], &mut a2[x], &mut et[x],
        );
    }
    lanes_sum(e)
}

fn zeros_for(w: usize) -> std::borrow::Cow<'static, [f32]> {
    if w <= ZEROS.len() {
        std::borrow::Cow::Borrowed(&ZEROS[..])
    } else {
        std::borrow::Cow::Owned(vec![0.0; w])
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn phase_a_generic(
    f: &Fields<'_>,
    c: Consts,
    p11: &[f32],
    p12: &[f32],
    p21: &[f32],
    p22: &[f32],
    y0: usize,
    u1: &mut [f32],
    u2: &mut [f32],
    du: &mut [f32],
) -> f64 {
    let w = f.w;
    let rows = u1.len() / w;
    let zeros = zeros_for(w);
    let mut sum = 0.0;
    for r in 0..rows {
        let s = r * w..(r + 1) * w;
        sum += a_row(
            f,
            c,
            p11,
            p12,
            p21,
            p22,
            y0 + r,
            &zeros,
            &mut u1[s.clone()],
            &mut u2[s.clone()],
            &mut du[s],
        );
    }
    sum
}

crate::cpu::simd_dispatch!(
    fn phase_b(
        taut: f32,
        w: usize,
        h: usize,
        u1: &[f32],
        u2: &[f32],
        y0: usize,
        p11: &mut [f32],
        p12: &mut [f32],
        p21: &mut [f32],
        p22: &mut [f32],
    ) = phase_b_generic
);

/// `(float) hypot(x, y)` as glibc computes it: in double, rounded once to float.
#[inline(always)]
pub(crate) fn hypot32(x: f32, y: f32) -> f32 {
    let (x, y) = (f64::from(x), f64::from(y));
    (x * x + y * y).sqrt() as f32
}

/// The dual update of one pixel for one flow component.
#[inline(always)]
pub(crate) fn dual(pa: &mut f32, pb: &mut f32, ux: f32, uy: f32, taut: f32) {
    let g = hypot32(ux, uy);
    let ng = 1.0 + taut * g;
    *pa = (*pa + taut * ux) / ng;
    *pb = (*pb + taut * uy) / ng;
}

/// Forward differences of row `y` of `u` into `gx`, `gy` (zero past the last
/// column and row, as OpenCV's `forwardGradient`).
#[inline(always)]
pub(crate) fn forward_row(u: &[f32], w: usize, h: usize, y: usize, gx: &mut [f32], gy: &mut [f32]) {
    let r = &u[y * w..(y + 1) * w];
    let (gx, gy) = (&mut gx[..w], &mut gy[..w]);
    let (r1, r0) = (&r[1..], &r[..w - 1]);
    for x in 0..w - 1 {
        gx[x] = r1[x] - r0[x];
    }
    gx[w - 1] = 0.0;
    if y + 1 < h {
        let rn = &u[(y + 1) * w..(y + 2) * w];
        for x in 0..w {
            gy[x] = rn[x] - r[x];
        }
    } else {
        gy.fill(0.0);
    }
}

/// Phase B of row `y`: the forward gradient of u1, u2 computed inline (no row buffer)
/// and the dual update of that row of p (`q11..q22`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn b_row(
    taut: f32,
    w: usize,
    h: usize,
    u1: &[f32],
    u2: &[f32],
    y: usize,
    q11: &mut [f32],
    q12: &mut [f32],
    q21: &mut [f32],
    q22: &mut [f32],
) {
    if w == 0 {
        return;
    }
    let o = y * w;
    let (r1, r2) = (&u1[o..o + w], &u2[o..o + w]);
    let (q11, q12, q21, q22) = (&mut q11[..w], &mut q12[..w], &mut q21[..w], &mut q22[..w]);
    let n = w - 1;
    if y + 1 < h {
        let (s1, s2) = (&u1[o + w..o + 2 * w], &u2[o + w..o + 2 * w]);
        let (r1n, r2n) = (&r1[1..], &r2[1..]);
        let (r1, r2, s1, s2) = (&r1[..n], &r2[..n], &s1[..w], &s2[..w]);
        for x in 0..n {
            dual(
                &mut q11[x],
                &mut q12[x],
                r1n[x] - r1[x],
                s1[x] - r1[x],
                taut,
            );
            dual(
                &mut q21[x],
                &mut q22[x],
                r2n[x] - r2[x],
                s2[x] - r2[x],
                taut,
            );
        }
        let (l1, l2) = (u1[o + n], u2[o + n]);
        dual(&mut q11[n], &mut q12[n], 0.0, s1[n] - l1, taut);
        dual(&mut q21[n], &mut q22[n], 0.0, s2[n] - l2, taut);
    } else {
        let (r1n, r2n) = (&r1[1..], &r2[1..]);
        let (r1, r2) = (&r1[..n], &r2[..n]);
        for x in 0..n {
            dual(&mut q11[x], &mut q12[x], r1n[x] - r1[x], 0.0, taut);
            dual(&mut q21[x], &mut q22[x], r2n[x] - r2[x], 0.0, taut);
        }
        dual(&mut q11[n], &mut q12[n], 0.0, 0.0, taut);
        dual(&mut q21[n], &mut q22[n], 0.0, 0.0, taut);
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn phase_b_generic(
    taut: f32,
    w: usize,
    h: usize,
    u1: &[f32],
    u2: &[f32],
    y0: usize,
    p11: &mut [f32],
    p12: &mut [f32],
    p21: &mut [f32],
    p22: &mut [f32],
) {
    let rows = p11.len() / w;
    for r in 0..rows {
        let s = r * w..(r + 1) * w;
        b_row(
            taut,
            w,
            h,
            u1,
            u2,
            y0 + r,
            &mut p11[s.clone()],
            &mut p12[s.clone()],
            &mut p21[s.clone()],
            &mut p22[s],
        );
    }
}

/// The interior rows' code in [`sweep_rows`]: LLVM's vectorisation of `ab_row`.
const LLVM: u8 = 0;
/// ... [`avx512::ab_row`].
const AVX512: u8 = 1;
/// ... [`avx2::ab_row`].
const AVX2: u8 = 2;

/// One sequential iteration (see [`sweep_rows`]): with AVX-512 or AVX2, the interior rows
/// run [`avx512::ab_row`] or [`avx2::ab_row`] (explicit vectors with a masked last vector);
/// otherwise the LLVM-vectorised build.
#[allow(clippy::too_many_arguments)]
fn sweep(
    f: &Fields<'_>,
    c: Consts,
    p11: &mut [f32],
    p12: &mut [f32],
    p21: &mut [f32],
    p22: &mut [f32],
    u1: &mut [f32],
    u2: &mut [f32],
    du: &mut [f32],
) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if f.w >= 2 && crate::cpu::has_avx512() {
        // SAFETY: the CPU supports AVX-512F (checked at run time).
        return unsafe { sweep_avx512(f, c, p11, p12, p21, p22, u1, u2, du) };
    }
    #[cfg(target_arch = "x86_64")]
    if f.w >= 2 && crate::cpu::has_avx2() {
        // SAFETY: the CPU supports AVX2 (checked at run time).
        return unsafe { sweep_avx2(f, c, p11, p12, p21, p22, u1, u2, du) };
    }
    sweep_llvm(f, c, p11, p12, p21, p22, u1, u2, du)
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2")]
unsafe fn sweep_avx2(
    f: &Fields<'_>,
    c: Consts,
    p11: &mut [f32],
    p12: &mut [f32],
    p21: &mut [f32],
    p22: &mut [f32],
    u1: &mut [f32],
    u2: &mut [f32],
    du: &mut [f32],
) -> f64 {
    sweep_rows::<AVX2>(f, c, p11, p12, p21, p22, u1, u2, du)
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn sweep_avx512(
    f: &Fields<'_>,
    c: Consts,
    p11: &mut [f32],
    p12: &mut [f32],
    p21: &mut [f32],
    p22: &mut [f32],
    u1: &mut [f32],
    u2: &mut [f32],
    du: &mut [f32],
) -> f64 {
    sweep_rows::<AVX512>(f, c, p11, p12, p21, p22, u1, u2, du)
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn sweep_generic(
    f: &Fields<'_>,
    c: Consts,
    p11: &mut [f32],
    p12: &mut [f32],
    p21: &mut [f32],
    p22: &mut [f32],
    u1: &mut [f32],
    u2: &mut [f32],
    du: &mut [f32],
) -> f64 {
    sweep_rows::<LLVM>(f, c, p11, p12, p21, p22, u1, u2, du)
}

crate::cpu::simd_dispatch!(
    fn sweep_llvm(
        f: &Fields<'_>,
        c: Consts,
        p11: &mut [f32],
        p12: &mut [f32],
        p21: &mut [f32],
        p22: &mut [f32],
        u1: &mut [f32],
        u2: &mut [f32],
        du: &mut [f32],
    ) -> f64 = sweep_generic
);

/// Both half-steps in one pass down the rows (sequential path): phase A of row `y + 1`,
/// then phase B of row `y`. Phase B of row `y` reads u rows `y` and `y + 1` (both updated
/// by then) and writes p row `y`, which phase A of row `y + 1` has already read; phase A of
/// row `y + 2` reads p rows `y + 1` and `y + 2`, not yet written. So every value read is
/// the one the two separate passes read, and the results are the same bits.
///
/// `ROWS` picks the code of the interior rows: [`LLVM`] (`ab_row`, vectorised by LLVM for
/// the caller's instruction set), [`AVX512`] ([`avx512::ab_row`]) or [`AVX2`]
/// ([`avx2::ab_row`]); the last two only on a CPU with that instruction set and `w >= 2`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn sweep_rows<const ROWS: u8>(
    f: &Fields<'_>,
    c: Consts,
    p11: &mut [f32],
    p12: &mut [f32],
    p21: &mut [f32],
    p22: &mut [f32],
    u1: &mut [f32],
    u2: &mut [f32],
    du: &mut [f32],
) -> f64 {
    let (w, h) = (f.w, f.h);
    if w == 0 || h == 0 {
        return 0.0;
    }
    let zeros = zeros_for(w);
    let s = 0..w;
    let mut sum = a_row(
        f,
        c,
        p11,
        p12,
        p21,
        p22,
        0,
        &zeros,
        &mut u1[s.clone()],
        &mut u2[s.clone()],
        &mut du[s],
    );
    for y in 0..h - 1 {
        #[cfg(target_arch = "x86_64")]
        if ROWS != LLVM {
            let rows = RowPtrs::new(f, y, p11, p12, p21, p22, u1, u2, du);
            if ROWS == AVX512 {
                // SAFETY: only `sweep_avx512` sets it, on a CPU with AVX-512F.
                unsafe { avx512::ab_row(c, &rows) };
            } else {
                // SAFETY: only `sweep_avx2` sets it, on a CPU with AVX2.
                unsafe { avx2::ab_row(c, &rows) };
            }
            sum += lanes_sum(&du[(y + 1) * w..(y + 2) * w]);
            continue;
        }
        sum += ab_row(f, c, y, p11, p12, p21, p22, u1, u2, du);
    }
    let s = (h - 1) * w..h * w;
    b_row(
        c.taut,
        w,
        h,
        u1,
        u2,
        h - 1,
        &mut p11[s.clone()],
        &mut p12[s.clone()],
        &mut p21[s.clone()],
        &mut p22[s],
    );
    sum
}

/// Phase A of row `y + 1` and phase B of row `y`, interleaved pixel by pixel (so that
/// the dual update's divisions and square roots overlap the primal update's arithmetic).
/// At pixel `x`, A reads p12, p22 of row `y` at `x` before B overwrites them, and p of row
/// `y + 1` (which B does not write here); B reads u of row `y` (final) and the value of
/// row `y + 1` that A has just computed at `x`. Returns the sum of row `y + 1`'s squared
/// updates.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn ab_row(
    f: &Fields<'_>,
    c: Consts,
    y: usize,
    p11: &mut [f32],
    p12: &mut [f32],
    p21: &mut [f32],
    p22: &mut [f32],
    u1: &mut [f32],
    u2: &mut [f32],
    du: &mut [f32],
) -> f64 {
    let w = f.w;
    let taut = c.taut;
    let (o, on) = (y * w, (y + 1) * w);
    let (p11a, p11b) = p11.split_at_mut(on);
    let (p12a, p12b) = p12.split_at_mut(on);
    let (p21a, p21b) = p21.split_at_mut(on);
    let (p22a, p22b) = p22.split_at_mut(on);
    let (q11, q12, q21, q22) = (
        &mut p11a[o..o + w],
        &mut p12a[o..o + w],
        &mut p21a[o..o + w],
        &mut p22a[o..o + w],
    );
    let (ra1, rb1, ra2, rb2) = (&p11b[..w], &p12b[..w], &p21b[..w], &p22b[..w]);
    let (u1a, u1b) = u1.split_at_mut(on);
    let (u2a, u2b) = u2.split_at_mut(on);
    let (r1, r2) = (&u1a[o..o + w], &u2a[o..o + w]);
    let (a1, a2) = (&mut u1b[..w], &mut u2b[..w]);
    let e = &mut du[on..on + w];
    let (ix, iy, g, rc) = (
        &f.i1wx[on..on + w],
        &f.i1wy[on..on + w],
        &f.grad[on..on + w],
        &f.rho[on..on + w],
    );
    // Pixel 0: A (no left neighbour), then B.
    px(
        c,
        rc[0],
        ix[0],
        iy[0],
        g[0],
        (ra1[0] + rb1[0]) - q12[0],
        (ra2[0] + rb2[0]) - q22[0],
        &mut a1[0],
        &mut a2[0],
        &mut e[0],
    );
    if w == 1 {
        dual(&mut q11[0], &mut q12[0], 0.0, a1[0] - r1[0], taut);
        dual(&mut q21[0], &mut q22[0], 0.0, a2[0] - r2[0], taut);
        return lanes_sum(e);
    }
    dual(&mut q11[0], &mut q12[0], r1[1] - r1[0], a1[0] - r1[0], taut);
    dual(&mut q21[0], &mut q22[0], r2[1] - r2[0], a2[0] - r2[0], taut);
    // Pixels 1..w-1: both, on slices of one length (vectorised).
    let m = w - 2;
    {
        let (ra1p, ra1c, rb1c) = (&ra1[..m], &ra1[1..w - 1], &rb1[1..w - 1]);
        let (ra2p, ra2c, rb2c) = (&ra2[..m], &ra2[1..w - 1], &rb2[1..w - 1]);
        let (ixc, iyc, gc, rcc) = (&ix[1..w - 1], &iy[1..w - 1], &g[1..w - 1], &rc[1..w - 1]);
        let (a1c, a2c, ec) = (&mut a1[1..w - 1], &mut a2[1..w - 1], &mut e[1..w - 1]);
        let (r1c, r1n, r2c, r2n) = (&r1[1..w - 1], &r1[2..w], &r2[1..w - 1], &r2[2..w]);
        let (q11c, q12c, q21c, q22c) = (
            &mut q11[1..w - 1],
            &mut q12[1..w - 1],
            &mut q21[1..w - 1],
            &mut q22[1..w - 1],
        );
        for x in 0..m {
            let d1 = (ra1c[x] - ra1p[x]) + (rb1c[x] - q12c[x]);
            let d2 = (ra2c[x] - ra2p[x]) + (rb2c[x] - q22c[x]);
            px(
                c,
                rcc[x],
                ixc[x],
                iyc[x],
                gc[x],
                d1,
                d2,
                &mut a1c[x],
                &mut a2c[x],
                &mut ec[x],
            );
            let (n1, n2) = (a1c[x], a2c[x]);
            dual(
                &mut q11c[x],
                &mut q12c[x],
                r1n[x] - r1c[x],
                n1 - r1c[x],
                taut,
            );
            dual(
                &mut q21c[x],
                &mut q22c[x],
                r2n[x] - r2c[x],
                n2 - r2c[x],
                taut,
            );
        }
    }
    // Pixel w-1: A, then B with no right neighbour.
    let l = w - 1;
    px(
        c,
        rc[l],
        ix[l],
        iy[l],
        g[l],
        (ra1[l] - ra1[l - 1]) + (rb1[l] - q12[l]),
        (ra2[l] - ra2[l - 1]) + (rb2[l] - q22[l]),
        &mut a1[l],
        &mut a2[l],
        &mut e[l],
    );
    dual(&mut q11[l], &mut q12[l], 0.0, a1[l] - r1[l], taut);
    dual(&mut q21[l], &mut q22[l], 0.0, a2[l] - r2[l], taut);
    lanes_sum(e)
}

/// The rows of one [`ab_row`] as raw pointers, for the explicit SIMD kernels: p and u at
/// row `y` (B updates p there, u is read) and at row `y + 1` (p is read, A updates u), the
/// squared updates and the warp's fields at row `y + 1`. [`RowPtrs::new`] checks every
/// slice's length, so a kernel that reads or writes at most `w` values from each pointer
/// (and reads `ra1`, `ra2` one before only through a masked-off lane) stays inside them.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct RowPtrs {
    w: usize,
    q11: *mut f32,
    q12: *mut f32,
    q21: *mut f32,
    q22: *mut f32,
    ra1: *const f32,
    rb1: *const f32,
    ra2: *const f32,
    rb2: *const f32,
    r1: *const f32,
    r2: *const f32,
    a1: *mut f32,
    a2: *mut f32,
    e: *mut f32,
    ix: *const f32,
    iy: *const f32,
    g: *const f32,
    rc: *const f32,
}

#[cfg(target_arch = "x86_64")]
impl RowPtrs {
    #[allow(clippy::too_many_arguments)]
    fn new(
        f: &Fields<'_>,
        y: usize,
        p11: &mut [f32],
        p12: &mut [f32],
        p21: &mut [f32],
        p22: &mut [f32],
        u1: &mut [f32],
        u2: &mut [f32],
        du: &mut [f32],
    ) -> Self {
        let w = f.w;
        let (o, on) = (y * w, (y + 1) * w);
        let end = on + w;
        assert!(w >= 2);
        for v in [&*p11, &*p12, &*p21, &*p22, &*u1, &*u2, &*du] {
            assert!(v.len() >= end);
        }
        for v in [f.i1wx, f.i1wy, f.grad, f.rho] {
            assert!(v.len() >= end);
        }
        // One pointer per slice, so that both rows derive from it.
        let (pp11, pp12, pp21, pp22) = (
            p11.as_mut_ptr(),
            p12.as_mut_ptr(),
            p21.as_mut_ptr(),
            p22.as_mut_ptr(),
        );
        let (pu1, pu2) = (u1.as_mut_ptr(), u2.as_mut_ptr());
        // In bounds by the asserts (`wrapping_add` only spares an `unsafe`).
        Self {
            w,
            q11: pp11.wrapping_add(o),
            q12: pp12.wrapping_add(o),
            q21: pp21.wrapping_add(o),
            q22: pp22.wrapping_add(o),
            ra1: pp11.wrapping_add(on),
            rb1: pp12.wrapping_add(on),
            ra2: pp21.wrapping_add(on),
            rb2: pp22.wrapping_add(on),
            r1: pu1.wrapping_add(o),
            r2: pu2.wrapping_add(o),
            a1: pu1.wrapping_add(on),
            a2: pu2.wrapping_add(on),
            e: du.as_mut_ptr().wrapping_add(on),
            ix: f.i1wx.as_ptr().wrapping_add(on),
            iy: f.i1wy.as_ptr().wrapping_add(on),
            g: f.grad.as_ptr().wrapping_add(on),
            rc: f.rho.as_ptr().wrapping_add(on),
        }
    }
}

/// [`ab_row`] written with AVX-512 vectors of 16 pixels: the first vector of a row computes
/// pixel 0's divergence with its own formula (blended into lane 0), and the last vector is
/// masked, so no pixel of a row is left to narrower vectors or scalar code (LLVM's epilogue
/// for the 14 pixels left of a 112-pixel row cost about 15% of the iteration). Every lane
/// performs `px` and `dual`'s f32 and f64 operations in their order, without fused
/// multiply-adds, so the bits are `ab_row`'s.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Consts, RowPtrs};
    use std::arch::x86_64::*;

    /// `(float) hypot(x, y)` of 16 lanes: in double, rounded once (as `hypot32`).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn hypot16(x: __m512, y: __m512) -> __m512 {
        let half = |v: __m512, hi: bool| -> __m512d {
            let d = _mm512_castps_pd(v);
            let h = if hi {
                _mm512_extractf64x4_pd::<1>(d)
            } else {
                _mm512_castpd512_pd256(d)
            };
            _mm512_cvtps_pd(_mm256_castpd_ps(h))
        };
        let norm = |hi: bool| -> __m256 {
            let (a, b) = (half(x, hi), half(y, hi));
            _mm512_cvtpd_ps(_mm512_sqrt_pd(_mm512_add_pd(
                _mm512_mul_pd(a, a),
                _mm512_mul_pd(b, b),
            )))
        };
        let (lo, hi) = (norm(false), norm(true));
        _mm512_castpd_ps(_mm512_insertf64x4::<1>(
            _mm512_castpd256_pd512(_mm256_castps_pd(lo)),
            _mm256_castps_pd(hi),
        ))
    }

    /// `dual` on 16 lanes: returns the new (pa, pb).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn dual16(pa: __m512, pb: __m512, ux: __m512, uy: __m512, taut: __m512) -> (__m512, __m512) {
        let g = hypot16(ux, uy);
        let ng = _mm512_add_ps(_mm512_set1_ps(1.0), _mm512_mul_ps(taut, g));
        (
            _mm512_div_ps(_mm512_add_ps(pa, _mm512_mul_ps(taut, ux)), ng),
            _mm512_div_ps(_mm512_add_ps(pb, _mm512_mul_ps(taut, uy)), ng),
        )
    }

    /// `ab_row` (phase A of row `y + 1`, phase B of row `y`) on the rows of `r`; the caller
    /// sums the squared updates of row `y + 1`.
    ///
    /// # Safety
    /// The CPU must support AVX-512F, and `r` must come from `RowPtrs::new` on slices not
    /// touched since.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn ab_row(c: Consts, r: &RowPtrs) {
        let RowPtrs {
            w,
            q11,
            q12,
            q21,
            q22,
            ra1,
            rb1,
            ra2,
            rb2,
            r1,
            r2,
            a1,
            a2,
            e,
            ix,
            iy,
            g,
            rc,
        } = *r;
        // SAFETY: `RowPtrs::new` checked the slices: every access below is within `w`
        // values of its pointer, lanes past a row's end are masked off, and the one lane
        // before `ra1`, `ra2` is masked off at `x = 0`.
        unsafe {
            let l_t = _mm512_set1_ps(c.l_t);
            let neg_l_t = _mm512_set1_ps(-c.l_t);
            let theta = _mm512_set1_ps(c.theta);
            let taut = _mm512_set1_ps(c.taut);
            let tiny = _mm512_set1_ps(f32::EPSILON);
            // -v (flips the sign bit; `_mm512_xor_ps` would need AVX-512DQ).
            let sign = _mm512_set1_epi32(i32::MIN);
            let neg =
                |v: __m512| _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v), sign));
            // Lanes inside the row from `x`, and lanes whose right neighbour is inside it
            // (the forward difference of the last pixel is 0).
            let masks = |x: usize| -> (__mmask16, __mmask16) {
                let left = w - x;
                let k = if left >= 16 {
                    0xFFFF
                } else {
                    (1u16 << left) - 1
                };
                let kr = if left > 16 {
                    0xFFFF
                } else {
                    (1u16 << (left - 1)) - 1
                };
                (k, kr)
            };
            // A of the 16 pixels from `x` (row y + 1): returns the new u1, u2 there and the
            // p12, p22 of row y there (read before B updates them).
            let a_vec = |x: usize| -> [__m512; 4] {
                let (k, _) = masks(x);
                macro_rules! ld {
                    ($p:expr) => {
                        _mm512_maskz_loadu_ps(k, $p.add(x))
                    };
                }
                // Divergence of p at row y + 1.
                let (q12v, q22v) = (ld!(q12), ld!(q22));
                let (ra1v, rb1v, ra2v, rb2v) = (ld!(ra1), ld!(rb1), ld!(ra2), ld!(rb2));
                let (ra1p, ra2p) = if x == 0 {
                    (
                        _mm512_maskz_loadu_ps(k & !1, ra1.wrapping_sub(1)),
                        _mm512_maskz_loadu_ps(k & !1, ra2.wrapping_sub(1)),
                    )
                } else {
                    (
                        _mm512_maskz_loadu_ps(k, ra1.add(x - 1)),
                        _mm512_maskz_loadu_ps(k, ra2.add(x - 1)),
                    )
                };
                let mut d1 = _mm512_add_ps(_mm512_sub_ps(ra1v, ra1p), _mm512_sub_ps(rb1v, q12v));
                let mut d2 = _mm512_add_ps(_mm512_sub_ps(ra2v, ra2p), _mm512_sub_ps(rb2v, q22v));
                if x == 0 {
                    // Pixel 0: (a + b) - c, OpenCV's order without a left neighbour.
                    d1 = _mm512_mask_mov_ps(d1, 1, _mm512_sub_ps(_mm512_add_ps(ra1v, rb1v), q12v));
                    d2 = _mm512_mask_mov_ps(d2, 1, _mm512_sub_ps(_mm512_add_ps(ra2v, rb2v), q22v));
                }
                // Thresholding and primal update (`px`).
                let (o1, o2) = (ld!(a1), ld!(a2));
                let (ixv, iyv, gv, rcv) = (ld!(ix), ld!(iy), ld!(g), ld!(rc));
                let rho = _mm512_add_ps(
                    rcv,
                    _mm512_add_ps(_mm512_mul_ps(ixv, o1), _mm512_mul_ps(iyv, o2)),
                );
                // `threshold`: the factor of (ix, iy) is l_t below -l_t g, -l_t above l_t g,
                // -rho / g between (when g > EPSILON), and the step is +0 otherwise. ((-l_t) g
                // is -(l_t g) exactly, and (-l_t) ix the scalar code's -l_t * ix.)
                let lg = _mm512_mul_ps(l_t, gv);
                let fi = _mm512_maskz_div_ps(k, neg(rho), gv);
                let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(rho, neg(lg));
                let above = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(rho, lg) & !below;
                let inner = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(gv, tiny) & !below & !above;
                let factor = _mm512_mask_mov_ps(_mm512_mask_mov_ps(fi, above, neg_l_t), below, l_t);
                let moved = below | above | inner;
                let t1 = _mm512_maskz_mul_ps(moved, factor, ixv);
                let t2 = _mm512_maskz_mul_ps(moved, factor, iyv);
                let n1 = _mm512_add_ps(_mm512_add_ps(o1, t1), _mm512_mul_ps(theta, d1));
                let n2 = _mm512_add_ps(_mm512_add_ps(o2, t2), _mm512_mul_ps(theta, d2));
                _mm512_mask_storeu_ps(a1.add(x), k, n1);
                _mm512_mask_storeu_ps(a2.add(x), k, n2);
                let (e1, e2) = (_mm512_sub_ps(n1, o1), _mm512_sub_ps(n2, o2));
                let ev = _mm512_add_ps(_mm512_mul_ps(e1, e1), _mm512_mul_ps(e2, e2));
                _mm512_mask_storeu_ps(e.add(x), k, ev);
                [n1, n2, q12v, q22v]
            };
            // B of the 16 pixels from `x` (row y): forward gradient of u (row y + 1 as A
            // left it) and the dual update.
            let b_vec = |x: usize, [n1, n2, q12v, q22v]: [__m512; 4]| {
                let (k, kr) = masks(x);
                let (r1v, r2v) = (
                    _mm512_maskz_loadu_ps(k, r1.add(x)),
                    _mm512_maskz_loadu_ps(k, r2.add(x)),
                );
                let r1n = _mm512_maskz_loadu_ps(kr, r1.add(x + 1));
                let r2n = _mm512_maskz_loadu_ps(kr, r2.add(x + 1));
                let ux1 = _mm512_maskz_sub_ps(kr, r1n, r1v);
                let ux2 = _mm512_maskz_sub_ps(kr, r2n, r2v);
                let (uy1, uy2) = (_mm512_sub_ps(n1, r1v), _mm512_sub_ps(n2, r2v));
                let (n11, n12) = dual16(_mm512_maskz_loadu_ps(k, q11.add(x)), q12v, ux1, uy1, taut);
                let (n21, n22) = dual16(_mm512_maskz_loadu_ps(k, q21.add(x)), q22v, ux2, uy2, taut);
                _mm512_mask_storeu_ps(q11.add(x), k, n11);
                _mm512_mask_storeu_ps(q12.add(x), k, n12);
                _mm512_mask_storeu_ps(q21.add(x), k, n21);
                _mm512_mask_storeu_ps(q22.add(x), k, n22);
            };
            // Skewed by one vector (A of the next 16 pixels beside B of these), so that two
            // independent chains of dependent operations are in flight.
            let mut prev = a_vec(0);
            let mut x = 16;
            while x < w {
                let next = a_vec(x);
                b_vec(x - 16, prev);
                prev = next;
                x += 16;
            }
            b_vec(x - 16, prev);
        }
    }
}

/// [`avx512::ab_row`] for AVX2: vectors of 8 pixels, the masks as vectors
/// (`vmaskmovps` loads and stores, which touch no masked-off lane), the same operations in
/// the same order, so the bits are `ab_row`'s.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Consts, RowPtrs};
    use std::arch::x86_64::*;

    /// `(float) hypot(x, y)` of 8 lanes: in double, rounded once (as `hypot32`).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn hypot8(x: __m256, y: __m256) -> __m256 {
        let norm = |a: __m128, b: __m128| -> __m128 {
            let (a, b) = (_mm256_cvtps_pd(a), _mm256_cvtps_pd(b));
            _mm256_cvtpd_ps(_mm256_sqrt_pd(_mm256_add_pd(
                _mm256_mul_pd(a, a),
                _mm256_mul_pd(b, b),
            )))
        };
        let lo = norm(_mm256_castps256_ps128(x), _mm256_castps256_ps128(y));
        let hi = norm(_mm256_extractf128_ps::<1>(x), _mm256_extractf128_ps::<1>(y));
        _mm256_set_m128(hi, lo)
    }

    /// `dual` on 8 lanes: returns the new (pa, pb).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn dual8(pa: __m256, pb: __m256, ux: __m256, uy: __m256, taut: __m256) -> (__m256, __m256) {
        let g = hypot8(ux, uy);
        let ng = _mm256_add_ps(_mm256_set1_ps(1.0), _mm256_mul_ps(taut, g));
        (
            _mm256_div_ps(_mm256_add_ps(pa, _mm256_mul_ps(taut, ux)), ng),
            _mm256_div_ps(_mm256_add_ps(pb, _mm256_mul_ps(taut, uy)), ng),
        )
    }

    /// `ab_row` (phase A of row `y + 1`, phase B of row `y`) on the rows of `r`; the caller
    /// sums the squared updates of row `y + 1`.
    ///
    /// # Safety
    /// The CPU must support AVX2, and `r` must come from `RowPtrs::new` on slices not
    /// touched since.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn ab_row(c: Consts, r: &RowPtrs) {
        let RowPtrs {
            w,
            q11,
            q12,
            q21,
            q22,
            ra1,
            rb1,
            ra2,
            rb2,
            r1,
            r2,
            a1,
            a2,
            e,
            ix,
            iy,
            g,
            rc,
        } = *r;
        // SAFETY: `RowPtrs::new` checked the slices: every access below is within `w`
        // values of its pointer, lanes past a row's end are masked off, and the one lane
        // before `ra1`, `ra2` is masked off at `x = 0`.
        unsafe {
            let l_t = _mm256_set1_ps(c.l_t);
            let neg_l_t = _mm256_set1_ps(-c.l_t);
            let theta = _mm256_set1_ps(c.theta);
            let taut = _mm256_set1_ps(c.taut);
            let tiny = _mm256_set1_ps(f32::EPSILON);
            let sign = _mm256_set1_ps(-0.0);
            let neg = |v: __m256| _mm256_xor_ps(v, sign);
            let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            // Lanes inside the row from `x`, and lanes whose right neighbour is inside it
            // (the forward difference of the last pixel is 0).
            let masks = |x: usize| -> (__m256i, __m256i) {
                let left = (w - x).min(9) as i32;
                (
                    _mm256_cmpgt_epi32(_mm256_set1_epi32(left), iota),
                    _mm256_cmpgt_epi32(_mm256_set1_epi32(left - 1), iota),
                )
            };
            let keep = |v: __m256, m: __m256i| _mm256_and_ps(v, _mm256_castsi256_ps(m));
            // Masked moves only where a vector reaches past the row's end: `vmaskmovps`
            // stores are slow on AMD's cores.
            let load = |p: *const f32, m: __m256i, full: bool| {
                if full {
                    _mm256_loadu_ps(p)
                } else {
                    _mm256_maskload_ps(p, m)
                }
            };
            let store = |p: *mut f32, m: __m256i, v: __m256, full: bool| {
                if full {
                    _mm256_storeu_ps(p, v)
                } else {
                    _mm256_maskstore_ps(p, m, v)
                }
            };
            // A of the 8 pixels from `x` (row y + 1): the new u1, u2 there and the p12, p22
            // of row y there (read before B updates them).
            let a_vec = |x: usize| -> [__m256; 4] {
                let (k, _) = masks(x);
                let full = x + 8 <= w;
                macro_rules! ld {
                    ($p:expr) => {
                        load($p.add(x), k, full)
                    };
                }
                let (q12v, q22v) = (ld!(q12), ld!(q22));
                let (ra1v, rb1v, ra2v, rb2v) = (ld!(ra1), ld!(rb1), ld!(ra2), ld!(rb2));
                let (ra1p, ra2p) = if x == 0 {
                    let k0 = _mm256_blend_epi32::<1>(k, _mm256_setzero_si256());
                    (
                        _mm256_maskload_ps(ra1.wrapping_sub(1), k0),
                        _mm256_maskload_ps(ra2.wrapping_sub(1), k0),
                    )
                } else {
                    (load(ra1.add(x - 1), k, full), load(ra2.add(x - 1), k, full))
                };
                let mut d1 = _mm256_add_ps(_mm256_sub_ps(ra1v, ra1p), _mm256_sub_ps(rb1v, q12v));
                let mut d2 = _mm256_add_ps(_mm256_sub_ps(ra2v, ra2p), _mm256_sub_ps(rb2v, q22v));
                if x == 0 {
                    // Pixel 0: (a + b) - c, OpenCV's order without a left neighbour.
                    d1 = _mm256_blend_ps::<1>(d1, _mm256_sub_ps(_mm256_add_ps(ra1v, rb1v), q12v));
                    d2 = _mm256_blend_ps::<1>(d2, _mm256_sub_ps(_mm256_add_ps(ra2v, rb2v), q22v));
                }
                let (o1, o2) = (ld!(a1), ld!(a2));
                let (ixv, iyv, gv, rcv) = (ld!(ix), ld!(iy), ld!(g), ld!(rc));
                let rho = _mm256_add_ps(
                    rcv,
                    _mm256_add_ps(_mm256_mul_ps(ixv, o1), _mm256_mul_ps(iyv, o2)),
                );
                // `threshold`, as in `avx512::ab_row`, with vector masks.
                let lg = _mm256_mul_ps(l_t, gv);
                let fi = _mm256_div_ps(neg(rho), gv);
                let below = _mm256_cmp_ps::<_CMP_LT_OQ>(rho, neg(lg));
                let above = _mm256_andnot_ps(below, _mm256_cmp_ps::<_CMP_GT_OQ>(rho, lg));
                let inner = _mm256_andnot_ps(
                    _mm256_or_ps(below, above),
                    _mm256_cmp_ps::<_CMP_GT_OQ>(gv, tiny),
                );
                let factor = _mm256_blendv_ps(_mm256_blendv_ps(fi, neg_l_t, above), l_t, below);
                let moved = _mm256_or_ps(_mm256_or_ps(below, above), inner);
                let t1 = _mm256_and_ps(_mm256_mul_ps(factor, ixv), moved);
                let t2 = _mm256_and_ps(_mm256_mul_ps(factor, iyv), moved);
                let n1 = _mm256_add_ps(_mm256_add_ps(o1, t1), _mm256_mul_ps(theta, d1));
                let n2 = _mm256_add_ps(_mm256_add_ps(o2, t2), _mm256_mul_ps(theta, d2));
                store(a1.add(x), k, n1, full);
                store(a2.add(x), k, n2, full);
                let (e1, e2) = (_mm256_sub_ps(n1, o1), _mm256_sub_ps(n2, o2));
                let ev = _mm256_add_ps(_mm256_mul_ps(e1, e1), _mm256_mul_ps(e2, e2));
                store(e.add(x), k, ev, full);
                [n1, n2, q12v, q22v]
            };
            // B of the 8 pixels from `x` (row y): forward gradient of u and the dual update.
            let b_vec = |x: usize, [n1, n2, q12v, q22v]: [__m256; 4]| {
                let (k, kr) = masks(x);
                let (full, full_r) = (x + 8 <= w, x + 9 <= w);
                let (r1v, r2v) = (load(r1.add(x), k, full), load(r2.add(x), k, full));
                let r1n = load(r1.add(x + 1), kr, full_r);
                let r2n = load(r2.add(x + 1), kr, full_r);
                let ux1 = keep(_mm256_sub_ps(r1n, r1v), kr);
                let ux2 = keep(_mm256_sub_ps(r2n, r2v), kr);
                let (uy1, uy2) = (_mm256_sub_ps(n1, r1v), _mm256_sub_ps(n2, r2v));
                let (n11, n12) = dual8(load(q11.add(x), k, full), q12v, ux1, uy1, taut);
                let (n21, n22) = dual8(load(q21.add(x), k, full), q22v, ux2, uy2, taut);
                store(q11.add(x), k, n11, full);
                store(q12.add(x), k, n12, full);
                store(q21.add(x), k, n21, full);
                store(q22.add(x), k, n22, full);
            };
            let mut prev = a_vec(0);
            let mut x = 8;
            while x < w {
                let next = a_vec(x);
                b_vec(x - 8, prev);
                prev = next;
                x += 8;
            }
            b_vec(x - 8, prev);
        }
    }
}

/// The iteration with the illumination term (gamma > 0): sequential, plain loops.
mod gamma {
    use super::*;

    pub(super) fn iterate(
        f: &Fields<'_>,
        c: Consts,
        u1: &mut [f32],
        u2: &mut [f32],
        u3: &mut [f32],
        p: &mut [Vec<f32>; 6],
        du: &mut [f32],
    ) -> f64 {
        let (w, h) = (f.w, f.h);
        let mut d = [vec![0f32; w], vec![0f32; w], vec![0f32; w]];
        let mut sum = 0.0;
        for y in 0..h {
            let [d1, d2, d3] = &mut d;
            divergence_row(&p[0], &p[1], w, y, d1);
            divergence_row(&p[2], &p[3], w, y, d2);
            divergence_row(&p[4], &p[5], w, y, d3);
            for x in 0..w {
                let i = y * w + x;
                let (o1, o2, o3) = (u1[i], u2[i], u3[i]);
                let (ix, iy) = (f.i1wx[i], f.i1wy[i]);
                let rho = f.rho[i] + (ix * o1 + iy * o2) + c.gamma * o3;
                let (t1, t2, k) = threshold(rho, f.grad[i], ix, iy, c.l_t);
                let t3 = k * c.gamma;
                let n1 = (o1 + t1) + c.theta * d1[x];
                let n2 = (o2 + t2) + c.theta * d2[x];
                let n3 = (o3 + t3) + c.theta * d3[x];
                u1[i] = n1;
                u2[i] = n2;
                u3[i] = n3;
                du[i] = (n1 - o1) * (n1 - o1) + (n2 - o2) * (n2 - o2) + (n3 - o3) * (n3 - o3);
            }
            sum += lanes_sum(&du[y * w..(y + 1) * w]);
        }
        let mut g = [vec![0f32; w], vec![0f32; w]];
        for (k, comp) in [&*u1, &*u2, &*u3].into_iter().enumerate() {
            for y in 0..h {
                let [gx, gy] = &mut g;
                forward_row(comp, w, h, y, gx, gy);
                let (pa, pb) = {
                    let (a, b) = p.split_at_mut(2 * k + 1);
                    (&mut a[2 * k], &mut b[0])
                };
                for x in 0..w {
                    dual(&mut pa[y * w + x], &mut pb[y * w + x], gx[x], gy[x], c.taut);
                }
            }
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One sequential iteration (the signature of `sweep` and its paths).
    type Sweep = fn(
        &Fields<'_>,
        Consts,
        &mut [f32],
        &mut [f32],
        &mut [f32],
        &mut [f32],
        &mut [f32],
        &mut [f32],
        &mut [f32],
    ) -> f64;

    /// Values that exercise every branch: zero and tiny gradients (the `+0` step), rho on
    /// both sides of +-l_t g, `-0.0` in u and p, equal neighbours (a zero forward difference).
    fn field(seed: u64, n: usize, scale: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                match s % 23 {
                    0 => 0.0,
                    1 => -0.0,
                    2 => 1e-9,
                    _ => ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale,
                }
            })
            .collect()
    }

    /// The sequential sweeps this CPU can run (AVX-512 and AVX2: explicit vectors and masked
    /// row ends; LLVM's build for the CPU) give the bits of the two separate half-steps
    /// compiled for the baseline instruction set, for every row length from 1 to 40 and
    /// around 112 (every remainder of 16 and 8 pixels).
    #[test]
    fn sweep_equals_the_two_baseline_passes_for_every_width() {
        let mut paths: Vec<(&str, Sweep)> = vec![("llvm", sweep_llvm)];
        #[cfg(target_arch = "x86_64")]
        {
            if crate::cpu::has_avx512() {
                paths.push(("avx512", |f, c, a, b, d, e, u, v, du| {
                    if f.w < 2 {
                        return sweep_llvm(f, c, a, b, d, e, u, v, du);
                    }
                    // SAFETY: the CPU has AVX-512F (checked above).
                    unsafe { sweep_avx512(f, c, a, b, d, e, u, v, du) }
                }));
            } else {
                eprintln!("AVX-512 path skipped: this CPU has no AVX-512F");
            }
            if crate::cpu::has_avx2() {
                paths.push(("avx2", |f, c, a, b, d, e, u, v, du| {
                    if f.w < 2 {
                        return sweep_llvm(f, c, a, b, d, e, u, v, du);
                    }
                    // SAFETY: the CPU has AVX2 (checked above).
                    unsafe { sweep_avx2(f, c, a, b, d, e, u, v, du) }
                }));
            } else {
                eprintln!("AVX2 path skipped: this CPU has no AVX2");
            }
        }
        for (name, path) in paths {
            check_sweep(name, path);
        }
    }

    fn check_sweep(name: &str, sweep: Sweep) {
        let c = Consts {
            l_t: 0.045,
            theta: 0.3,
            taut: 0.83,
            gamma: 0.0,
        };
        let widths = (1..=40).chain([95, 96, 97, 111, 112, 113]);
        for w in widths {
            for h in [1, 2, 3, 5] {
                let n = w * h;
                let seed = (w * 10 + h) as u64;
                let (ix, iy) = (field(seed, n, 40.0), field(seed + 1, n, 40.0));
                let grad: Vec<f32> = (0..n)
                    .map(|i| {
                        if i % 7 == 3 {
                            0.0
                        } else {
                            ix[i] * ix[i] + iy[i] * iy[i]
                        }
                    })
                    .collect();
                let rho = field(seed + 2, n, 8.0);
                let f = Fields {
                    i1wx: &ix,
                    i1wy: &iy,
                    grad: &grad,
                    rho: &rho,
                    w,
                    h,
                };
                let mut u1 = field(seed + 3, n, 2.0);
                let mut u2 = field(seed + 4, n, 2.0);
                // Equal neighbours along a row now and then: a zero forward difference.
                for i in (0..n.saturating_sub(1)).step_by(5) {
                    u1[i + 1] = u1[i];
                }
                let mut p: [Vec<f32>; 4] =
                    std::array::from_fn(|k| field(seed + 5 + k as u64, n, 1.0));
                let (mut v1, mut v2, mut q) = (u1.clone(), u2.clone(), p.clone());
                let (mut du, mut dv) = (vec![0f32; n], vec![0f32; n]);
                for round in 0..3 {
                    let [p11, p12, p21, p22] = &mut p;
                    let got = sweep(&f, c, p11, p12, p21, p22, &mut u1, &mut u2, &mut du);
                    let [q11, q12, q21, q22] = &mut q;
                    let want =
                        phase_a_generic(&f, c, q11, q12, q21, q22, 0, &mut v1, &mut v2, &mut dv);
                    phase_b_generic(c.taut, w, h, &v1, &v2, 0, q11, q12, q21, q22);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    let at = format!("{name}, w={w} h={h} round {round}");
                    assert_eq!(bits(&u1), bits(&v1), "u1, {at}");
                    assert_eq!(bits(&u2), bits(&v2), "u2, {at}");
                    assert_eq!(bits(&du), bits(&dv), "du, {at}");
                    for k in 0..4 {
                        assert_eq!(bits(&p[k]), bits(&q[k]), "p[{k}], {at}");
                    }
                    assert_eq!(got.to_bits(), want.to_bits(), "sum, {at}");
                }
            }
        }
    }
}
