//! The host side of the GPU path: the pyramid, warp, outer and inner loops of
//! `tvl1.rs`, each step a kernel launch over a whole batch of pairs.

use crate::image::{Flow, GrayImage};
use crate::resize::{dst_size, Scale};
use crate::{Error, Result, TvL1Params};
use std::sync::Mutex;

/// The kernels of `cuda/*.cu`, in [`Kernel::ALL`] order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// `tvl1_resize` (resize.cu).
    Resize,
    /// `tvl1_centered_gradient` (gradient.cu).
    CenteredGradient,
    /// `tvl1_warp` (warp.cu).
    Warp,
    /// `tvl1_threshold` (threshold.cu).
    Threshold,
    /// `tvl1_divergence` (divergence.cu): divergence and primal update.
    Divergence,
    /// `tvl1_dual` (dual.cu): forward gradient and dual update.
    Dual,
    /// `tvl1_median` (median.cu).
    Median,
    /// `tvl1_error_partial` (reduce.cu), one block per pair.
    ErrorPartial,
    /// `tvl1_error_decide` (reduce.cu), one thread per pair.
    ErrorDecide,
}

impl Kernel {
    /// Every kernel.
    pub const ALL: [Kernel; 9] = [
        Kernel::Resize,
        Kernel::CenteredGradient,
        Kernel::Warp,
        Kernel::Threshold,
        Kernel::Divergence,
        Kernel::Dual,
        Kernel::Median,
        Kernel::ErrorPartial,
        Kernel::ErrorDecide,
    ];

    /// The kernel's `extern "C"` name.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Resize => "tvl1_resize",
            Kernel::CenteredGradient => "tvl1_centered_gradient",
            Kernel::Warp => "tvl1_warp",
            Kernel::Threshold => "tvl1_threshold",
            Kernel::Divergence => "tvl1_divergence",
            Kernel::Dual => "tvl1_dual",
            Kernel::Median => "tvl1_median",
            Kernel::ErrorPartial => "tvl1_error_partial",
            Kernel::ErrorDecide => "tvl1_error_decide",
        }
    }

    /// The `.cu` file that defines it.
    pub fn file(self) -> &'static str {
        match self {
            Kernel::Resize => "resize.cu",
            Kernel::CenteredGradient => "gradient.cu",
            Kernel::Warp => "warp.cu",
            Kernel::Threshold => "threshold.cu",
            Kernel::Divergence => "divergence.cu",
            Kernel::Dual => "dual.cu",
            Kernel::Median => "median.cu",
            Kernel::ErrorPartial | Kernel::ErrorDecide => "reduce.cu",
        }
    }
}

/// A kernel argument, in the kernel's parameter order.
#[derive(Debug)]
pub enum Arg<'a, B> {
    /// A device buffer (a pointer parameter of any element type).
    Buf(&'a B),
    /// An `int`.
    I32(i32),
    /// A `float`.
    F32(f32),
    /// A `double`.
    F64(f64),
}

/// Device memory and kernel launches: CUDA through cudarc, or the tests' CPU shim.
///
/// Buffers are untyped bytes; all operations are ordered (one stream).
pub trait Backend {
    /// A device buffer.
    type Buf;
    /// A zeroed buffer of `bytes` bytes.
    fn alloc(&self, bytes: usize) -> Result<Self::Buf>;
    /// Zeroes a whole buffer.
    fn zero(&self, buf: &mut Self::Buf) -> Result<()>;
    /// Copies `data` to the start of `buf`.
    fn upload(&self, buf: &mut Self::Buf, data: &[u8]) -> Result<()>;
    /// Copies the start of `buf` into `out` (waits for the pending work).
    fn download(&self, buf: &Self::Buf, out: &mut [u8]) -> Result<()>;
    /// Copies the first `bytes` bytes of `src` to `dst`.
    fn copy(&self, src: &Self::Buf, dst: &mut Self::Buf, bytes: usize) -> Result<()>;
    /// Launches `kernel` on a 1-D grid of `grid` blocks of `block` threads.
    fn launch(
        &self,
        kernel: Kernel,
        grid: u32,
        block: u32,
        args: &[Arg<'_, Self::Buf>],
    ) -> Result<()>;
}

pub(crate) fn f32_bytes(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and u8 has alignment 1; the length covers the same memory.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

fn f32_bytes_mut(v: &mut [f32]) -> &mut [u8] {
    // SAFETY: as above, and every bit pattern is a valid f32.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

fn i32_bytes(v: &[i32]) -> &[u8] {
    // SAFETY: i32 has no padding and u8 has alignment 1.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

fn i32_bytes_mut(v: &mut [i32]) -> &mut [u8] {
    // SAFETY: as above, and every bit pattern is a valid i32.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// Threads per block of the per-pixel kernels.
const BLOCK: u32 = 256;
/// Threads per pair of the first reduction stage (one block per pair).
const REDUCE_BLOCK: u32 = 256;

fn grid_for(total: usize) -> Result<u32> {
    let g = total.div_ceil(BLOCK as usize);
    u32::try_from(g).map_err(|_| Error::Gpu(format!("grid of {g} blocks is too large")))
}

fn as_i32(v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::Gpu(format!("{v} does not fit a kernel's int parameter")))
}

/// Per-level planes of a batch.
struct Level<B> {
    w: usize,
    h: usize,
    i0: B,
    i1: B,
    u1: B,
    u2: B,
    u3: B,
}

/// Device buffers of one batch shape, kept between calls.
struct Buffers<B> {
    key: (usize, usize, usize, bool),
    levels: Vec<Level<B>>,
    i1x: B,
    i1y: B,
    i1wx: B,
    i1wy: B,
    grad: B,
    rho: B,
    v: [B; 3],
    p: [B; 6],
    du: B,
    tmp: B,
    active: B,
    error: B,
    partial: B,
}

/// Dual TV-L1 on a [`Backend`]: the same parameters, loops and stopping rule as
/// [`crate::TvL1`], every step a kernel over a batch of same-size pairs.
pub struct GpuTvL1<B: Backend> {
    backend: B,
    params: TvL1Params,
    table: B::Buf,
    max_batch: usize,
    check_every: usize,
    cache: Mutex<Option<Buffers<B::Buf>>>,
}

impl<B: Backend> std::fmt::Debug for GpuTvL1<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuTvL1")
            .field("params", &self.params)
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> GpuTvL1<B> {
    /// A solver on `backend` with the given parameters (validated).
    pub fn with_backend(backend: B, params: TvL1Params) -> Result<Self> {
        params.validate()?;
        let tab: Vec<f32> = crate::remap::table().iter().flatten().copied().collect();
        let mut table = backend.alloc(tab.len() * 4)?;
        backend.upload(&mut table, f32_bytes(&tab))?;
        Ok(Self {
            backend,
            params,
            table,
            max_batch: 256,
            check_every: 2,
            cache: Mutex::new(None),
        })
    }

    /// At most this many pairs per kernel launch (default 256; about 1.4 MB
    /// of device memory per 112x112 pair).
    pub fn with_max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// Read the per-pair stop flags back every `n` inner iterations (default 2):
    /// fewer syncs against more launches on pairs that have already stopped.
    /// Results do not depend on it.
    pub fn with_check_every(mut self, n: usize) -> Self {
        self.check_every = n.max(1);
        self
    }

    /// The parameters.
    pub fn params(&self) -> &TvL1Params {
        &self.params
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Flow from `prev` to `next`, starting from zero.
    pub fn compute(&self, prev: &GrayImage, next: &GrayImage) -> Result<Flow> {
        self.compute_into_batch(&[(prev, next)], None)
            .pop()
            .expect("one result per pair")
    }

    /// Flow from `prev` to `next` starting from `initial` (OpenCV's `useInitialFlow`).
    pub fn compute_with_initial(
        &self,
        prev: &GrayImage,
        next: &GrayImage,
        initial: &Flow,
    ) -> Result<Flow> {
        self.compute_into_batch(&[(prev, next)], Some(&[initial]))
            .pop()
            .expect("one result per pair")
    }

    /// Flows of many pairs: pairs of one size go through the kernels together,
    /// up to the batch limit per launch. Results are in input order; a bad pair
    /// gives its own error and the others still complete.
    pub fn compute_batch(&self, pairs: &[(&GrayImage, &GrayImage)]) -> Vec<Result<Flow>> {
        self.compute_into_batch(pairs, None)
    }

    fn compute_into_batch(
        &self,
        pairs: &[(&GrayImage, &GrayImage)],
        initial: Option<&[&Flow]>,
    ) -> Vec<Result<Flow>> {
        let mut out: Vec<Option<Result<Flow>>> = (0..pairs.len()).map(|_| None).collect();
        // Group the valid pairs by size, in input order.
        let mut groups: Vec<((usize, usize), Vec<usize>)> = Vec::new();
        for (k, (a, b)) in pairs.iter().enumerate() {
            let (w, h) = match crate::tvl1::check_inputs(a, b, initial.map(|f| f[k])) {
                Ok(size) => size,
                Err(e) => {
                    out[k] = Some(Err(e));
                    continue;
                }
            };
            match groups.iter_mut().find(|(s, _)| *s == (w, h)) {
                Some((_, v)) => v.push(k),
                None => groups.push(((w, h), vec![k])),
            }
        }
        for ((w, h), idx) in groups {
            for chunk in idx.chunks(self.max_batch) {
                let ps: Vec<(&GrayImage, &GrayImage)> = chunk.iter().map(|&k| pairs[k]).collect();
                let init: Option<Vec<&Flow>> =
                    initial.map(|f| chunk.iter().map(|&k| f[k]).collect());
                match self.run(w, h, &ps, init.as_deref()) {
                    Ok(flows) => {
                        for (&k, f) in chunk.iter().zip(flows) {
                            out[k] = Some(Ok(f));
                        }
                    }
                    Err(e) => {
                        for &k in chunk {
                            out[k] = Some(Err(Error::Gpu(e.to_string())));
                        }
                    }
                }
            }
        }
        out.into_iter()
            .map(|r| r.expect("every pair has a result"))
            .collect()
    }

    /// The pyramid sizes of a `w` x `h` pair (as tvl1.rs: stop below 16 px).
    fn pyramid(&self, w: usize, h: usize) -> Vec<(usize, usize)> {
        let mut sizes = vec![(w, h)];
        for _ in 1..self.params.nscales {
            let &(pw, ph) = sizes.last().expect("level 0");
            let (nw, nh) = dst_size(pw, ph, Scale::Factor(self.params.scale_step));
            if nw < 16 || nh < 16 {
                break;
            }
            sizes.push((nw, nh));
        }
        sizes
    }

    fn buffers(&self, w: usize, h: usize, nb: usize, gamma: bool) -> Result<Buffers<B::Buf>> {
        let be = &self.backend;
        let f = |n: usize| be.alloc(n * nb * 4);
        let sizes = self.pyramid(w, h);
        let n0 = w * h;
        let mut levels = Vec::with_capacity(sizes.len());
        for &(lw, lh) in &sizes {
            let n = lw * lh;
            levels.push(Level {
                w: lw,
                h: lh,
                i0: f(n)?,
                i1: f(n)?,
                u1: f(n)?,
                u2: f(n)?,
                u3: f(if gamma { n } else { 1 })?,
            });
        }
        let g = if gamma { n0 } else { 1 };
        Ok(Buffers {
            key: (w, h, nb, gamma),
            levels,
            i1x: f(n0)?,
            i1y: f(n0)?,
            i1wx: f(n0)?,
            i1wy: f(n0)?,
            grad: f(n0)?,
            rho: f(n0)?,
            v: [f(n0)?, f(n0)?, f(g)?],
            p: [f(n0)?, f(n0)?, f(n0)?, f(n0)?, f(g)?, f(g)?],
            du: f(n0)?,
            tmp: f(n0)?,
            active: be.alloc(nb * 4)?,
            error: be.alloc(nb * 4)?,
            partial: be.alloc(nb * REDUCE_BLOCK as usize * 8)?,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn resize(
        &self,
        src: &B::Buf,
        sw: usize,
        sh: usize,
        dst: &B::Buf,
        dw: usize,
        dh: usize,
        scale: (f64, f64),
        mul: f32,
        nb: usize,
    ) -> Result<()> {
        use Arg::*;
        self.backend.launch(
            Kernel::Resize,
            grid_for(dw * dh * nb)?,
            BLOCK,
            &[
                Buf(src),
                I32(as_i32(sw)?),
                I32(as_i32(sh)?),
                Buf(dst),
                I32(as_i32(dw)?),
                I32(as_i32(dh)?),
                F64(scale.0),
                F64(scale.1),
                F32(mul),
                I32(as_i32(nb)?),
            ],
        )
    }

    fn any_active(&self, active: &B::Buf, nb: usize) -> Result<bool> {
        let mut flags = vec![0i32; nb];
        self.backend.download(active, i32_bytes_mut(&mut flags))?;
        Ok(flags.iter().any(|&a| a != 0))
    }

    fn run(
        &self,
        w: usize,
        h: usize,
        pairs: &[(&GrayImage, &GrayImage)],
        initial: Option<&[&Flow]>,
    ) -> Result<Vec<Flow>> {
        let nb = pairs.len();
        let gamma = self.params.gamma != 0.0;
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| Error::Gpu("a previous GPU call panicked".into()))?;
        let mut bufs = match cache.take() {
            Some(b) if b.key == (w, h, nb, gamma) => b,
            _ => self.buffers(w, h, nb, gamma)?,
        };
        let result = self.run_on(&mut bufs, pairs, initial);
        *cache = Some(bufs);
        result
    }

    fn run_on(
        &self,
        bufs: &mut Buffers<B::Buf>,
        pairs: &[(&GrayImage, &GrayImage)],
        initial: Option<&[&Flow]>,
    ) -> Result<Vec<Flow>> {
        let p = &self.params;
        let be = &self.backend;
        let nb = pairs.len();
        let gamma = p.gamma != 0.0;
        let nscales = bufs.levels.len();
        let (w, h) = (bufs.levels[0].w, bufs.levels[0].h);
        let n0 = w * h;
        // Level 0: the pairs one after the other.
        let mut host = Vec::with_capacity(n0 * nb);
        for (a, _) in pairs {
            host.extend_from_slice(a.data());
        }
        be.upload(&mut bufs.levels[0].i0, f32_bytes(&host))?;
        host.clear();
        for (_, b) in pairs {
            host.extend_from_slice(b.data());
        }
        be.upload(&mut bufs.levels[0].i1, f32_bytes(&host))?;
        let inv = 1.0 / p.scale_step;
        for s in 1..nscales {
            let (lo, hi) = bufs.levels.split_at_mut(s);
            let (a, b) = (&lo[s - 1], &hi[0]);
            self.resize(&a.i0, a.w, a.h, &b.i0, b.w, b.h, (inv, inv), 1.0, nb)?;
            self.resize(&a.i1, a.w, a.h, &b.i1, b.w, b.h, (inv, inv), 1.0, nb)?;
        }
        if let Some(init) = initial {
            for comp in 0..2 {
                host.clear();
                for f in init {
                    host.extend(f.data().iter().skip(comp).step_by(2));
                }
                let l0 = &mut bufs.levels[0];
                be.upload(
                    if comp == 0 { &mut l0.u1 } else { &mut l0.u2 },
                    f32_bytes(&host),
                )?;
            }
            let k = p.scale_step as f32;
            for s in 1..nscales {
                let (lo, hi) = bufs.levels.split_at_mut(s);
                let (a, b) = (&lo[s - 1], &hi[0]);
                let ratio = (
                    1.0 / (b.w as f64 / a.w as f64),
                    1.0 / (b.h as f64 / a.h as f64),
                );
                self.resize(&a.u1, a.w, a.h, &b.u1, b.w, b.h, ratio, k, nb)?;
                self.resize(&a.u2, a.w, a.h, &b.u2, b.w, b.h, ratio, k, nb)?;
            }
        } else {
            let c = &mut bufs.levels[nscales - 1];
            be.zero(&mut c.u1)?;
            be.zero(&mut c.u2)?;
        }
        if gamma {
            be.zero(&mut bufs.levels[nscales - 1].u3)?;
        }
        let inv_step = (1.0 / p.scale_step) as f32;
        for s in (0..nscales).rev() {
            self.one_scale(bufs, s, nb)?;
            if s == 0 {
                break;
            }
            let (lo, hi) = bufs.levels.split_at_mut(s);
            let (fine, coarse) = (&lo[s - 1], &hi[0]);
            let ratio = (
                1.0 / (fine.w as f64 / coarse.w as f64),
                1.0 / (fine.h as f64 / coarse.h as f64),
            );
            self.resize(
                &coarse.u1, coarse.w, coarse.h, &fine.u1, fine.w, fine.h, ratio, inv_step, nb,
            )?;
            self.resize(
                &coarse.u2, coarse.w, coarse.h, &fine.u2, fine.w, fine.h, ratio, inv_step, nb,
            )?;
            if gamma {
                self.resize(
                    &coarse.u3, coarse.w, coarse.h, &fine.u3, fine.w, fine.h, ratio, 1.0, nb,
                )?;
            }
        }
        let mut u = vec![0f32; n0 * nb];
        let mut v = vec![0f32; n0 * nb];
        be.download(&bufs.levels[0].u1, f32_bytes_mut(&mut u))?;
        be.download(&bufs.levels[0].u2, f32_bytes_mut(&mut v))?;
        (0..nb)
            .map(|b| Flow::from_planes(w, h, &u[b * n0..(b + 1) * n0], &v[b * n0..(b + 1) * n0]))
            .collect()
    }

    fn one_scale(&self, bufs: &mut Buffers<B::Buf>, s: usize, nb: usize) -> Result<()> {
        use Arg::*;
        let p = &self.params;
        let be = &self.backend;
        let gamma = p.gamma != 0.0;
        let Buffers {
            levels,
            i1x,
            i1y,
            i1wx,
            i1wy,
            grad,
            rho,
            v,
            p: pd,
            du,
            tmp,
            active,
            error,
            partial,
            ..
        } = bufs;
        let lv = &mut levels[s];
        let (w, h) = (lv.w, lv.h);
        let n = w * h;
        let (wi, hi, nbi, ni) = (as_i32(w)?, as_i32(h)?, as_i32(nb)?, as_i32(n)?);
        let grid = grid_for(n * nb)?;
        let scaled_eps = (p.epsilon * p.epsilon * n as f64) as f32;
        let l_t = (p.lambda * p.theta) as f32;
        let theta = p.theta as f32;
        let taut = (p.tau / p.theta) as f32;
        let gam = p.gamma as f32;
        let g = i32::from(gamma);
        for q in pd.iter_mut() {
            be.zero(q)?;
        }
        be.launch(
            Kernel::CenteredGradient,
            grid,
            BLOCK,
            &[Buf(&lv.i1), Buf(i1x), Buf(i1y), I32(wi), I32(hi), I32(nbi)],
        )?;
        let ones = vec![1i32; nb];
        for _warp in 0..p.warps {
            be.launch(
                Kernel::Warp,
                grid,
                BLOCK,
                &[
                    Buf(&lv.i1),
                    Buf(i1x),
                    Buf(i1y),
                    Buf(&lv.i0),
                    Buf(&lv.u1),
                    Buf(&lv.u2),
                    Buf(&self.table),
                    Buf(i1wx),
                    Buf(i1wy),
                    Buf(grad),
                    Buf(rho),
                    I32(wi),
                    I32(hi),
                    I32(nbi),
                ],
            )?;
            be.upload(active, i32_bytes(&ones))?;
            for outer in 0..p.outer_iterations {
                if outer > 0 && !self.any_active(active, nb)? {
                    break;
                }
                if p.median_filtering > 1 {
                    let k = as_i32(p.median_filtering)?;
                    for u in [&mut lv.u1, &mut lv.u2] {
                        be.launch(
                            Kernel::Median,
                            grid,
                            BLOCK,
                            &[
                                Buf(u),
                                Buf(tmp),
                                I32(k),
                                Buf(active),
                                I32(wi),
                                I32(hi),
                                I32(nbi),
                            ],
                        )?;
                        be.copy(tmp, u, n * nb * 4)?;
                    }
                }
                for inner in 0..p.inner_iterations {
                    if inner > 0 && inner % self.check_every == 0 && !self.any_active(active, nb)? {
                        break;
                    }
                    be.launch(
                        Kernel::Threshold,
                        grid,
                        BLOCK,
                        &[
                            Buf(i1wx),
                            Buf(i1wy),
                            Buf(grad),
                            Buf(rho),
                            Buf(&lv.u1),
                            Buf(&lv.u2),
                            Buf(&lv.u3),
                            Buf(&v[0]),
                            Buf(&v[1]),
                            Buf(&v[2]),
                            F32(l_t),
                            F32(gam),
                            I32(g),
                            Buf(active),
                            I32(ni),
                            I32(nbi),
                        ],
                    )?;
                    be.launch(
                        Kernel::Divergence,
                        grid,
                        BLOCK,
                        &[
                            Buf(&pd[0]),
                            Buf(&pd[1]),
                            Buf(&pd[2]),
                            Buf(&pd[3]),
                            Buf(&pd[4]),
                            Buf(&pd[5]),
                            Buf(&v[0]),
                            Buf(&v[1]),
                            Buf(&v[2]),
                            Buf(&lv.u1),
                            Buf(&lv.u2),
                            Buf(&lv.u3),
                            Buf(du),
                            F32(theta),
                            I32(g),
                            Buf(active),
                            I32(wi),
                            I32(hi),
                            I32(nbi),
                        ],
                    )?;
                    be.launch(
                        Kernel::Dual,
                        grid,
                        BLOCK,
                        &[
                            Buf(&lv.u1),
                            Buf(&lv.u2),
                            Buf(&lv.u3),
                            Buf(&pd[0]),
                            Buf(&pd[1]),
                            Buf(&pd[2]),
                            Buf(&pd[3]),
                            Buf(&pd[4]),
                            Buf(&pd[5]),
                            F32(taut),
                            I32(g),
                            Buf(active),
                            I32(wi),
                            I32(hi),
                            I32(nbi),
                        ],
                    )?;
                    be.launch(
                        Kernel::ErrorPartial,
                        nb as u32,
                        REDUCE_BLOCK,
                        &[Buf(du), Buf(partial), Buf(active), I32(ni), I32(nbi)],
                    )?;
                    be.launch(
                        Kernel::ErrorDecide,
                        (nb as u32).div_ceil(64),
                        64,
                        &[
                            Buf(partial),
                            I32(REDUCE_BLOCK as i32),
                            Buf(du),
                            Buf(error),
                            Buf(active),
                            F32(scaled_eps),
                            I32(ni),
                            I32(nbi),
                        ],
                    )?;
                }
            }
        }
        Ok(())
    }
}
