//! Dual TV-L1 optical flow, step for step as OpenCV's CPU `DualTVL1OpticalFlow`.
//!
//! Every floating-point operation is done in f32 in OpenCV's order (no fused
//! multiply-add), so that the result follows OpenCV's to within its own
//! rounding. The iteration is reorganised for speed (one pass down the rows per
//! inner iteration, or one per half-step when a pair is spread over threads;
//! vectorised; no allocation after the first call on a [`Workspace`]) but not
//! shortened: the epsilon stopping rule is OpenCV's, decided on the same f32
//! error sum.

use crate::image::{Flow, GrayImage};
use crate::kernels;
use crate::median::{median_in_place, median_rows};
use crate::remap;
use crate::resize::{dst_size, resize_linear, Scale};
use crate::{Error, Result};
use rayon::prelude::*;

/// Parameters of Dual TV-L1; `Default` equals OpenCV's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct TvL1Params {
    /// Time step of the numerical scheme (OpenCV `tau`, default 0.25).
    pub tau: f64,
    /// Weight of the data term (OpenCV `lambda`, default 0.15).
    pub lambda: f64,
    /// Tightness of the coupling between u and v (OpenCV `theta`, default 0.3).
    pub theta: f64,
    /// Number of pyramid scales (default 5).
    pub nscales: usize,
    /// Warpings per scale (default 5).
    pub warps: usize,
    /// Stopping threshold on the mean squared update (default 0.01).
    pub epsilon: f64,
    /// Inner iterations per outer iteration (default 30).
    pub inner_iterations: usize,
    /// Outer iterations (median filter steps) per warp (default 10).
    pub outer_iterations: usize,
    /// Pyramid scale step (default 0.8).
    pub scale_step: f64,
    /// Weight of the illumination term (default 0: none).
    pub gamma: f64,
    /// Median filter size applied to the flow each outer iteration (default 5;
    /// 0 or 1 disables it; OpenCV supports 3 and 5 for float images).
    pub median_filtering: usize,
}

impl Default for TvL1Params {
    fn default() -> Self {
        Self {
            tau: 0.25,
            lambda: 0.15,
            theta: 0.3,
            nscales: 5,
            warps: 5,
            epsilon: 0.01,
            inner_iterations: 30,
            outer_iterations: 10,
            scale_step: 0.8,
            gamma: 0.0,
            median_filtering: 5,
        }
    }
}

impl TvL1Params {
    /// Checks every parameter's range.
    pub fn validate(&self) -> Result<()> {
        let bad = |name, value: f64, why| {
            Err(Error::BadParam {
                name,
                value: value.to_string(),
                why,
            })
        };
        if !(self.tau > 0.0 && self.tau.is_finite()) {
            return bad("tau", self.tau, "must be positive");
        }
        if !(self.lambda > 0.0 && self.lambda.is_finite()) {
            return bad("lambda", self.lambda, "must be positive");
        }
        if !(self.theta > 0.0 && self.theta.is_finite()) {
            return bad("theta", self.theta, "must be positive");
        }
        if !(self.epsilon > 0.0 && self.epsilon.is_finite()) {
            return bad("epsilon", self.epsilon, "must be positive");
        }
        if !(self.scale_step > 0.0 && self.scale_step < 1.0) {
            return bad("scale_step", self.scale_step, "must be in (0, 1)");
        }
        if !(self.gamma >= 0.0 && self.gamma.is_finite()) {
            return bad("gamma", self.gamma, "must be zero or positive");
        }
        for (name, v) in [
            ("nscales", self.nscales),
            ("warps", self.warps),
            ("inner_iterations", self.inner_iterations),
            ("outer_iterations", self.outer_iterations),
        ] {
            if v == 0 {
                return bad(name, 0.0, "must be at least 1");
            }
        }
        if ![0, 1, 3, 5].contains(&self.median_filtering) {
            return bad(
                "median_filtering",
                self.median_filtering as f64,
                "must be 0, 1, 3 or 5",
            );
        }
        Ok(())
    }
}

/// The Dual TV-L1 solver.
///
/// ```
/// use mer_flow::{GrayImage, TvL1, TvL1Params};
/// let (w, h) = (32, 32);
/// let img = |dx: f32| {
///     let d = (0..w * h).map(|i| {
///         let (x, y) = ((i % w) as f32 - dx, (i / w) as f32);
///         128.0 + 60.0 * ((x * 0.3).sin() * (y * 0.25).cos())
///     });
///     GrayImage::new(w, h, d.collect()).unwrap()
/// };
/// let flow = TvL1::new(TvL1Params::default())?.compute(&img(0.0), &img(0.5))?;
/// let (u, _v) = flow.get(16, 16);
/// assert!((u - 0.5).abs() < 0.1);
/// # Ok::<(), mer_flow::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct TvL1 {
    params: TvL1Params,
    /// Pixel count from which one pair's own work is spread over the rayon pool.
    parallel_from: usize,
}

/// Reusable buffers of one computation; keep one per thread to compute many
/// pairs without allocating.
#[derive(Default, Debug)]
pub struct Workspace {
    i0s: Vec<Vec<f32>>,
    i1s: Vec<Vec<f32>>,
    sizes: Vec<(usize, usize)>,
    u1s: Vec<Vec<f32>>,
    u2s: Vec<Vec<f32>>,
    u3s: Vec<Vec<f32>>,
    s: Scratch,
}

#[derive(Default, Debug)]
struct Scratch {
    i1x: Vec<f32>,
    i1y: Vec<f32>,
    i1wx: Vec<f32>,
    i1wy: Vec<f32>,
    grad: Vec<f32>,
    rho: Vec<f32>,
    p: [Vec<f32>; 6],
    du: Vec<f32>,
    tmp: Vec<f32>,
    packed: Vec<[f32; 4]>,
    row: Vec<f32>,
}

/// Per-level constants of the iteration.
#[derive(Clone, Copy)]
pub(crate) struct Consts {
    pub l_t: f32,
    pub theta: f32,
    pub taut: f32,
    pub gamma: f32,
}

/// The size `(w, h)` of a pair and its optional initial flow, or the error naming the one
/// whose size differs from `prev`'s (the CPU and CUDA paths check inputs alike).
pub(crate) fn check_inputs(
    i0: &GrayImage,
    i1: &GrayImage,
    initial: Option<&Flow>,
) -> Result<(usize, usize)> {
    let (w, h) = (i0.width(), i0.height());
    let others = [
        ("next", Some((i1.width(), i1.height()))),
        ("initial flow", initial.map(|f| (f.width(), f.height()))),
    ];
    for (other, size) in others {
        if let Some((b_w, b_h)) = size.filter(|&s| s != (w, h)) {
            return Err(Error::SizeMismatch {
                what: "prev",
                a_w: w,
                a_h: h,
                other,
                b_w,
                b_h,
            });
        }
    }
    Ok((w, h))
}

impl TvL1 {
    /// A solver with the given parameters (validated).
    pub fn new(params: TvL1Params) -> Result<Self> {
        params.validate()?;
        Ok(Self {
            params,
            parallel_from: 160 * 160,
        })
    }

    /// The parameters.
    pub fn params(&self) -> &TvL1Params {
        &self.params
    }

    /// Spread one pair's work over the rayon pool from this many pixels on
    /// (default 25,600; `usize::MAX` never does). Batch calls never do.
    pub fn with_parallel_from(mut self, pixels: usize) -> Self {
        self.parallel_from = pixels;
        self
    }

    /// Flow from `prev` to `next`, starting from zero.
    pub fn compute(&self, prev: &GrayImage, next: &GrayImage) -> Result<Flow> {
        let mut ws = Workspace::default();
        let mut out = Flow::zeros(1, 1)?;
        self.compute_into(&mut ws, prev, next, None, &mut out)?;
        Ok(out)
    }

    /// Flow from `prev` to `next` into `out`, reusing `ws`; `initial` is an
    /// optional starting flow (OpenCV's `useInitialFlow`).
    pub fn compute_into(
        &self,
        ws: &mut Workspace,
        prev: &GrayImage,
        next: &GrayImage,
        initial: Option<&Flow>,
        out: &mut Flow,
    ) -> Result<()> {
        let par =
            prev.width() * prev.height() >= self.parallel_from && rayon::current_num_threads() > 1;
        self.run(ws, prev, next, initial, out, par)
    }

    /// Flows of many pairs at once on the rayon pool (one pair per task, one
    /// workspace per thread). Results are in input order; a bad pair gives its
    /// own error and the others still complete.
    pub fn compute_batch(&self, pairs: &[(&GrayImage, &GrayImage)]) -> Vec<Result<Flow>> {
        pairs
            .par_iter()
            .map_init(Workspace::default, |ws, (a, b)| {
                let mut out = Flow::zeros(1, 1)?;
                self.run(ws, a, b, None, &mut out, false)?;
                Ok(out)
            })
            .collect()
    }

    fn run(
        &self,
        ws: &mut Workspace,
        i0: &GrayImage,
        i1: &GrayImage,
        initial: Option<&Flow>,
        out: &mut Flow,
        par: bool,
    ) -> Result<()> {
        let p = &self.params;
        let (w, h) = check_inputs(i0, i1, initial)?;
        let use_gamma = p.gamma != 0.0;
        // Pyramid: each level is the previous one resized by the scale step.
        ws.sizes.clear();
        ws.sizes.push((w, h));
        grow(&mut ws.i0s, 1);
        grow(&mut ws.i1s, 1);
        ws.i0s[0].clear();
        ws.i0s[0].extend_from_slice(i0.data());
        ws.i1s[0].clear();
        ws.i1s[0].extend_from_slice(i1.data());
        let mut nscales = p.nscales;
        for s in 1..p.nscales {
            let (pw, ph) = ws.sizes[s - 1];
            let (nw, nh) = dst_size(pw, ph, Scale::Factor(p.scale_step));
            if nw < 16 || nh < 16 {
                nscales = s;
                break;
            }
            grow(&mut ws.i0s, s + 1);
            grow(&mut ws.i1s, s + 1);
            let (a, b) = ws.i0s.split_at_mut(s);
            resize_linear(&a[s - 1], pw, ph, Scale::Factor(p.scale_step), &mut b[0]);
            let (a, b) = ws.i1s.split_at_mut(s);
            resize_linear(&a[s - 1], pw, ph, Scale::Factor(p.scale_step), &mut b[0]);
            ws.sizes.push((nw, nh));
        }
        grow(&mut ws.u1s, nscales);
        grow(&mut ws.u2s, nscales);
        grow(&mut ws.u3s, nscales);
        if let Some(f) = initial {
            ws.u1s[0] = f.u();
            ws.u2s[0] = f.v();
            for s in 1..nscales {
                let (pw, ph) = ws.sizes[s - 1];
                let (nw, nh) = ws.sizes[s];
                let k = p.scale_step as f32;
                for comp in [&mut ws.u1s, &mut ws.u2s] {
                    let (a, b) = comp.split_at_mut(s);
                    resize_linear(&a[s - 1], pw, ph, Scale::ToSize(nw, nh), &mut b[0]);
                    b[0].iter_mut().for_each(|v| *v *= k);
                }
            }
        } else {
            let (cw, ch) = ws.sizes[nscales - 1];
            for comp in [&mut ws.u1s, &mut ws.u2s] {
                comp[nscales - 1].clear();
                comp[nscales - 1].resize(cw * ch, 0.0);
            }
        }
        if use_gamma {
            let (cw, ch) = ws.sizes[nscales - 1];
            ws.u3s[nscales - 1].clear();
            ws.u3s[nscales - 1].resize(cw * ch, 0.0);
        }
        let inv_step = (1.0 / p.scale_step) as f32;
        for s in (0..nscales).rev() {
            let (lw, lh) = ws.sizes[s];
            let Workspace {
                i0s,
                i1s,
                u1s,
                u2s,
                u3s,
                s: scratch,
                ..
            } = ws;
            self.one_scale(
                &i0s[s],
                &i1s[s],
                lw,
                lh,
                &mut u1s[s],
                &mut u2s[s],
                &mut u3s[s],
                scratch,
                use_gamma,
                par,
            );
            if s == 0 {
                break;
            }
            let (fw, fh) = ws.sizes[s - 1];
            for (comp, scale) in [
                (&mut ws.u1s, true),
                (&mut ws.u2s, true),
                (&mut ws.u3s, false),
            ] {
                if !scale && !use_gamma {
                    continue;
                }
                let (a, b) = comp.split_at_mut(s);
                resize_linear(&b[0], lw, lh, Scale::ToSize(fw, fh), &mut a[s - 1]);
                if scale {
                    a[s - 1].iter_mut().for_each(|v| *v *= inv_step);
                }
            }
        }
        out.set_from_planes(w, h, &ws.u1s[0], &ws.u2s[0]);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn one_scale(
        &self,
        i0: &[f32],
        i1: &[f32],
        w: usize,
        h: usize,
        u1: &mut [f32],
        u2: &mut [f32],
        u3: &mut Vec<f32>,
        sc: &mut Scratch,
        use_gamma: bool,
        par: bool,
    ) {
        let p = &self.params;
        let n = w * h;
        let scaled_eps = (p.epsilon * p.epsilon * n as f64) as f32;
        let c = Consts {
            l_t: (p.lambda * p.theta) as f32,
            theta: p.theta as f32,
            taut: (p.tau / p.theta) as f32,
            gamma: p.gamma as f32,
        };
        // Every value of these is written before it is read: only their length matters
        // (no zeroing of what they held at the previous level).
        for b in [
            &mut sc.i1x,
            &mut sc.i1y,
            &mut sc.i1wx,
            &mut sc.i1wy,
            &mut sc.grad,
            &mut sc.rho,
            &mut sc.du,
        ] {
            b.resize(n, 0.0);
        }
        let np = if use_gamma { 6 } else { 4 };
        for b in sc.p.iter_mut().take(np) {
            b.clear();
            b.resize(n, 0.0);
        }
        if !use_gamma {
            u3.clear();
        }
        centered_gradient(i1, w, h, &mut sc.i1x, &mut sc.i1y);
        sc.packed.clear();
        sc.packed
            .extend((0..n).map(|i| [i1[i], sc.i1x[i], sc.i1y[i], 0.0]));
        for _warp in 0..p.warps {
            // Warp the second image and its gradients by the current flow, then
            // |grad I1w|^2 and the constant part of rho.
            let win = remap::WarpIn {
                packed: &sc.packed,
                i0,
                u1,
                u2,
                w,
                h,
            };
            if par {
                let rows = band_rows(h);
                sc.i1wx
                    .par_chunks_mut(rows * w)
                    .zip(sc.i1wy.par_chunks_mut(rows * w))
                    .zip(
                        sc.grad
                            .par_chunks_mut(rows * w)
                            .zip(sc.rho.par_chunks_mut(rows * w)),
                    )
                    .enumerate()
                    .for_each(|(b, ((wx, wy), (g, r)))| {
                        remap::warp_rows(&win, b * rows, wx, wy, g, r)
                    });
            } else {
                remap::warp_rows(
                    &win,
                    0,
                    &mut sc.i1wx,
                    &mut sc.i1wy,
                    &mut sc.grad,
                    &mut sc.rho,
                );
            }
            let mut error = f32::MAX;
            let mut n_outer = 0;
            while error > scaled_eps && n_outer < p.outer_iterations {
                n_outer += 1;
                if p.median_filtering > 1 {
                    for comp in [&mut *u1, &mut *u2] {
                        if par {
                            sc.tmp.resize(n, 0.0);
                            sc.tmp.copy_from_slice(comp);
                            median_plane(&sc.tmp, w, h, p.median_filtering, comp);
                        } else {
                            median_in_place(comp, w, h, p.median_filtering, &mut sc.row);
                        }
                    }
                }
                let mut n_inner = 0;
                while error > scaled_eps && n_inner < p.inner_iterations {
                    n_inner += 1;
                    error = kernels::iterate(
                        &kernels::Fields {
                            i1wx: &sc.i1wx,
                            i1wy: &sc.i1wy,
                            grad: &sc.grad,
                            rho: &sc.rho,
                            w,
                            h,
                        },
                        c,
                        u1,
                        u2,
                        if use_gamma { Some(&mut u3[..]) } else { None },
                        &mut sc.p,
                        &mut sc.du,
                        scaled_eps,
                        par,
                    );
                }
            }
        }
    }
}

fn grow(v: &mut Vec<Vec<f32>>, n: usize) {
    while v.len() < n {
        v.push(Vec::new());
    }
}

/// Rows per parallel band.
pub(crate) fn band_rows(h: usize) -> usize {
    let t = rayon::current_num_threads().max(1);
    h.div_ceil(4 * t).max(8)
}

/// The median filter of a plane over the rayon pool, in row bands (from a copy).
fn median_plane(src: &[f32], w: usize, h: usize, k: usize, dst: &mut [f32]) {
    let rows = band_rows(h);
    dst.par_chunks_mut(rows * w)
        .enumerate()
        .for_each_init(Vec::new, |pad, (b, d)| {
            let y0 = b * rows;
            median_rows(src, w, h, k, y0, y0 + d.len() / w, d, pad);
        });
}

/// OpenCV's `centeredGradient`: central differences, half one-sided ones at the border.
pub(crate) fn centered_gradient(src: &[f32], w: usize, h: usize, dx: &mut [f32], dy: &mut [f32]) {
    let at = |x: usize, y: usize| src[y * w + x];
    for y in 0..h {
        for x in 0..w {
            let gx = if x == 0 {
                at(1, y) - at(0, y)
            } else if x == w - 1 {
                at(x, y) - at(x - 1, y)
            } else {
                at(x + 1, y) - at(x - 1, y)
            };
            let gy = if y == 0 {
                at(x, 1) - at(x, 0)
            } else if y == h - 1 {
                at(x, y) - at(x, y - 1)
            } else {
                at(x, y + 1) - at(x, y - 1)
            };
            dx[y * w + x] = 0.5 * gx;
            dy[y * w + x] = 0.5 * gy;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(w: usize, h: usize, shift: f32) -> GrayImage {
        let px = (0..w * h).map(|i| {
            let (x, y) = ((i % w) as f32, (i / w) as f32);
            let b = shift
                * (-((x - w as f32 * 0.4).powi(2) + (y - h as f32 * 0.5).powi(2)) / 300.0).exp();
            (128.0
                + 50.0 * ((x - b) * 0.21).sin() * (y * 0.17).cos()
                + 20.0 * ((x - b) * 0.8).sin())
            .round()
        });
        GrayImage::new(w, h, px.collect()).unwrap()
    }

    /// Spreading one pair over threads, batching, and reusing a workspace all
    /// give the same bits as one sequential computation.
    #[test]
    fn parallel_batch_and_reuse_are_bit_identical() {
        let (a, b) = (pattern(200, 170, 0.0), pattern(200, 170, 1.2));
        let seq = TvL1::new(TvL1Params::default())
            .unwrap()
            .with_parallel_from(usize::MAX);
        let expect = seq.compute(&a, &b).unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let par = TvL1::new(TvL1Params::default())
            .unwrap()
            .with_parallel_from(0);
        let got = pool.install(|| par.compute(&a, &b)).unwrap();
        assert_eq!(got, expect);
        let (c, d) = (pattern(112, 112, 0.0), pattern(112, 112, 2.0));
        let batch = pool.install(|| seq.compute_batch(&[(&a, &b), (&c, &d), (&a, &d)]));
        assert_eq!(batch[0].as_ref().unwrap(), &expect);
        assert_eq!(batch[1].as_ref().unwrap(), &seq.compute(&c, &d).unwrap());
        assert!(matches!(batch[2], Err(Error::SizeMismatch { .. })));
        let mut ws = Workspace::default();
        let mut out = Flow::zeros(1, 1).unwrap();
        for (x, y) in [(&c, &d), (&a, &b)] {
            seq.compute_into(&mut ws, x, y, None, &mut out).unwrap();
        }
        assert_eq!(out, expect);
    }

    #[test]
    fn bad_parameters_and_inputs_are_errors() {
        for p in [
            TvL1Params {
                tau: 0.0,
                ..Default::default()
            },
            TvL1Params {
                scale_step: 1.0,
                ..Default::default()
            },
            TvL1Params {
                median_filtering: 7,
                ..Default::default()
            },
            TvL1Params {
                warps: 0,
                ..Default::default()
            },
        ] {
            assert!(matches!(TvL1::new(p), Err(Error::BadParam { .. })));
        }
        let t = TvL1::new(TvL1Params::default()).unwrap();
        let e = t
            .compute(&pattern(20, 20, 0.0), &pattern(21, 20, 0.0))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "size mismatch: prev is 20x20 but next is 21x20"
        );
        // Tiny images: fewer scales, still a result.
        let f = t.compute(&pattern(8, 8, 0.0), &pattern(8, 8, 0.5)).unwrap();
        assert_eq!((f.width(), f.height()), (8, 8));
    }

    #[test]
    fn initial_flow_is_used() {
        let (a, b) = (pattern(64, 64, 0.0), pattern(64, 64, 1.0));
        let t = TvL1::new(TvL1Params {
            warps: 1,
            nscales: 1,
            inner_iterations: 1,
            outer_iterations: 1,
            ..Default::default()
        })
        .unwrap();
        let init = Flow::new(64, 64, vec![0.7; 64 * 64 * 2]).unwrap();
        let mut ws = Workspace::default();
        let mut out = Flow::zeros(1, 1).unwrap();
        t.compute_into(&mut ws, &a, &b, Some(&init), &mut out)
            .unwrap();
        let zero = t.compute(&a, &b).unwrap();
        // One iteration moves little: the result stays near its start.
        assert!(out.mean_epe(&init).unwrap() < out.mean_epe(&zero).unwrap());
    }
}
