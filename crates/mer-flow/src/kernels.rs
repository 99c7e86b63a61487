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

crate::cpu::simd_dispatch!(
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
    ) -> f64 = sweep_generic
);

/// Both half-steps in one pass down the rows (sequential path): phase A of row `y + 1`,
/// then phase B of row `y`. Phase B of row `y` reads u rows `y` and `y + 1` (both updated
/// by then) and writes p row `y`, which phase A of row `y + 1` has already read; phase A of
/// row `y + 2` reads p rows `y + 1` and `y + 2`, not yet written. So every value read is
/// the one the two separate passes read, and the results are the same bits.
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
