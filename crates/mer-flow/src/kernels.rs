//! The inner iteration of Dual TV-L1, as two row-wise half-steps:
//!
//! - A: thresholding (OpenCV `estimateV`), divergence of p (`divergence`), the
//!   primal update (`estimateU`) and the squared update per pixel;
//! - B: forward gradient of u (`forwardGradient`) and the dual update
//!   (`estimateDualVariables`).
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
    let mut div1 = [0f32; 1024];
    let mut div2 = [0f32; 1024];
    let mut big1 = Vec::new();
    let mut big2 = Vec::new();
    let (d1b, d2b): (&mut [f32], &mut [f32]) = if w <= 1024 {
        (&mut div1[..w], &mut div2[..w])
    } else {
        big1.resize(w, 0.0);
        big2.resize(w, 0.0);
        (&mut big1[..], &mut big2[..])
    };
    let mut sum = 0.0;
    for r in 0..rows {
        let y = y0 + r;
        divergence_row(p11, p12, w, y, d1b);
        divergence_row(p21, p22, w, y, d2b);
        let o = y * w;
        let (ix, iy, g, rc) = (
            &f.i1wx[o..o + w],
            &f.i1wy[o..o + w],
            &f.grad[o..o + w],
            &f.rho[o..o + w],
        );
        let (a1, a2, e) = (
            &mut u1[r * w..(r + 1) * w],
            &mut u2[r * w..(r + 1) * w],
            &mut du[r * w..(r + 1) * w],
        );
        let (d1b, d2b) = (&d1b[..w], &d2b[..w]);
        for x in 0..w {
            let (o1, o2) = (a1[x], a2[x]);
            let rho = rc[x] + (ix[x] * o1 + iy[x] * o2);
            let (t1, t2, _) = threshold(rho, g[x], ix[x], iy[x], c.l_t);
            let v1 = o1 + t1;
            let v2 = o2 + t2;
            let n1 = v1 + c.theta * d1b[x];
            let n2 = v2 + c.theta * d2b[x];
            a1[x] = n1;
            a2[x] = n2;
            e[x] = (n1 - o1) * (n1 - o1) + (n2 - o2) * (n2 - o2);
        }
        sum += lanes_sum(e);
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
    let mut buf = [[0f32; 1024]; 4];
    let mut big = Vec::new();
    let [b0, b1, b2, b3] = &mut buf;
    let (gx1, gy1, gx2, gy2): (&mut [f32], &mut [f32], &mut [f32], &mut [f32]) = if w <= 1024 {
        (&mut b0[..w], &mut b1[..w], &mut b2[..w], &mut b3[..w])
    } else {
        big.resize(4 * w, 0.0);
        let (a, rest) = big.split_at_mut(w);
        let (b, rest) = rest.split_at_mut(w);
        let (c, d) = rest.split_at_mut(w);
        (a, b, c, d)
    };
    for r in 0..rows {
        let y = y0 + r;
        forward_row(u1, w, h, y, gx1, gy1);
        forward_row(u2, w, h, y, gx2, gy2);
        let s = r * w..(r + 1) * w;
        let (q11, q12, q21, q22) = (
            &mut p11[s.clone()],
            &mut p12[s.clone()],
            &mut p21[s.clone()],
            &mut p22[s],
        );
        let (gx1, gy1, gx2, gy2) = (&gx1[..w], &gy1[..w], &gx2[..w], &gy2[..w]);
        for x in 0..w {
            dual(&mut q11[x], &mut q12[x], gx1[x], gy1[x], taut);
            dual(&mut q21[x], &mut q22[x], gx2[x], gy2[x], taut);
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
