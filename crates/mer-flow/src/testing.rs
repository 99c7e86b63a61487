//! The CPU path's steps, exposed for the GPU path's tests (not a stable API).
//! Each function runs one step of `tvl1.rs` on plain planes.

use crate::kernels;
use crate::median::median_rows;
use crate::remap;
use crate::resize::{dst_size, resize_linear, Scale};
use crate::tvl1::Consts;

/// Size of the next pyramid level (OpenCV's rounding of `src * factor`).
pub fn pyramid_size(w: usize, h: usize, factor: f64) -> (usize, usize) {
    dst_size(w, h, Scale::Factor(factor))
}

/// Bilinear resize by a factor (the pyramid), as the CPU path.
pub fn resize_by(src: &[f32], w: usize, h: usize, factor: f64) -> (Vec<f32>, usize, usize) {
    let mut out = Vec::new();
    let (dw, dh) = resize_linear(src, w, h, Scale::Factor(factor), &mut out);
    (out, dw, dh)
}

/// Bilinear resize to a size (flow up- and downscaling), as the CPU path.
pub fn resize_to(src: &[f32], w: usize, h: usize, dw: usize, dh: usize) -> Vec<f32> {
    let mut out = Vec::new();
    resize_linear(src, w, h, Scale::ToSize(dw, dh), &mut out);
    out
}

/// OpenCV's bicubic weight table: 32 * 32 entries of 16 weights, flattened.
pub fn cubic_table() -> Vec<f32> {
    remap::table().iter().flatten().copied().collect()
}

/// The warp step: (I1w_x, I1w_y, |grad I1w|^2, rho_c) of I1 and its gradients
/// warped by (u1, u2).
#[allow(clippy::too_many_arguments)]
pub fn warp(
    i1: &[f32],
    i1x: &[f32],
    i1y: &[f32],
    i0: &[f32],
    u1: &[f32],
    u2: &[f32],
    w: usize,
    h: usize,
) -> [Vec<f32>; 4] {
    let n = w * h;
    let packed: Vec<[f32; 4]> = (0..n).map(|i| [i1[i], i1x[i], i1y[i], 0.0]).collect();
    let win = remap::WarpIn {
        packed: &packed,
        i0,
        u1,
        u2,
        w,
        h,
    };
    let mut out = [vec![0f32; n], vec![0f32; n], vec![0f32; n], vec![0f32; n]];
    let [a, b, c, d] = &mut out;
    remap::warp_rows(&win, 0, a, b, c, d);
    out
}

/// Median filter (k = 3 or 5) with replicated borders.
pub fn median(src: &[f32], w: usize, h: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0f32; w * h];
    let mut pad = Vec::new();
    median_rows(src, w, h, k, 0, h, &mut out, &mut pad);
    out
}

/// The per-warp fields read by the inner iteration.
pub use crate::kernels::Fields;

/// One inner iteration (thresholding, divergence, primal update, dual update)
/// in place; `p` holds p11, p12, p21, p22 (and p31, p32 with `u3`). Returns the
/// error value, on OpenCV's side of `scaled_eps`, and leaves the squared update
/// per pixel in `du`.
#[allow(clippy::too_many_arguments)]
pub fn iterate(
    f: &Fields<'_>,
    lambda: f64,
    theta: f64,
    tau: f64,
    gamma: f64,
    u1: &mut [f32],
    u2: &mut [f32],
    u3: Option<&mut [f32]>,
    p: &mut [Vec<f32>; 6],
    du: &mut [f32],
    scaled_eps: f32,
) -> f32 {
    let c = Consts {
        l_t: (lambda * theta) as f32,
        theta: theta as f32,
        taut: (tau / theta) as f32,
        gamma: gamma as f32,
    };
    kernels::iterate(f, c, u1, u2, u3, p, du, scaled_eps, false)
}

/// The thresholding of one pixel: (t1, t2, k) added to (u1, u2) (and k * gamma to u3).
pub fn threshold(rho: f32, g: f32, ix: f32, iy: f32, l_t: f32) -> (f32, f32, f32) {
    kernels::threshold(rho, g, ix, iy, l_t)
}

/// The backward-difference divergence of (pa, pb).
pub fn divergence(pa: &[f32], pb: &[f32], w: usize, h: usize) -> Vec<f32> {
    let mut out = vec![0f32; w * h];
    for y in 0..h {
        kernels::divergence_row(pa, pb, w, y, &mut out[y * w..]);
    }
    out
}

/// The forward gradient of `u` and the dual update of (pa, pb), in place.
pub fn dual_update(u: &[f32], pa: &mut [f32], pb: &mut [f32], w: usize, h: usize, taut: f32) {
    let (mut gx, mut gy) = (vec![0f32; w], vec![0f32; w]);
    for y in 0..h {
        kernels::forward_row(u, w, h, y, &mut gx, &mut gy);
        for x in 0..w {
            kernels::dual(&mut pa[y * w + x], &mut pb[y * w + x], gx[x], gy[x], taut);
        }
    }
}

/// OpenCV's `centeredGradient` of a plane, as the CPU path: `(d/dx, d/dy)`.
pub fn centered_gradient(src: &[f32], w: usize, h: usize) -> (Vec<f32>, Vec<f32>) {
    let (mut dx, mut dy) = (vec![0f32; w * h], vec![0f32; w * h]);
    crate::tvl1::centered_gradient(src, w, h, &mut dx, &mut dy);
    (dx, dy)
}
