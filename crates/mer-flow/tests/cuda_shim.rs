//! The CUDA kernels' logic on the CPU: the same `cuda/*.cu` source compiled as
//! C++ with a host shim that runs each grid sequentially
//! (`crates/mer-flow-cudashim`), driven by the GPU path's own host code
//! ([`GpuTvL1`]) through a [`Backend`] on host memory.
//!
//! Each step is held to the CPU path within 1e-4 px, one inner iteration and
//! the stopping decision exactly, and whole flows within 1e-3 px (mean
//! end-point error) on several pairs and parameter sets. Needs no GPU and no
//! CUDA library: it runs everywhere `cargo test` runs.

#[path = "common/pairs.rs"]
mod pairs;
use pairs::pair;

use mer_flow::cuda::{Arg, Backend, GpuTvL1, Kernel};
use mer_flow::testing;
use mer_flow::{Error, Flow, GrayImage, Result, TvL1, TvL1Params};
use std::ffi::c_void;

/// Host memory standing for device memory (8-byte aligned, for the doubles).
struct ShimBuf {
    ptr: *mut u64,
    words: usize,
}

impl Drop for ShimBuf {
    fn drop(&mut self) {
        // SAFETY: ptr came from Box::into_raw of a boxed slice of `words` u64.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr, self.words)) });
    }
}

impl ShimBuf {
    fn bytes(&self) -> usize {
        self.words * 8
    }
}

/// The CUDA backend's stand-in: buffers on the heap, kernels run by the shim.
struct Shim;

impl Backend for Shim {
    type Buf = ShimBuf;

    fn alloc(&self, bytes: usize) -> Result<ShimBuf> {
        let words = bytes.div_ceil(8).max(1);
        let ptr = Box::into_raw(vec![0u64; words].into_boxed_slice()).cast::<u64>();
        Ok(ShimBuf { ptr, words })
    }

    fn zero(&self, buf: &mut ShimBuf) -> Result<()> {
        // SAFETY: buf owns `words` u64.
        unsafe { std::ptr::write_bytes(buf.ptr, 0, buf.words) };
        Ok(())
    }

    fn upload(&self, buf: &mut ShimBuf, data: &[u8]) -> Result<()> {
        assert!(
            data.len() <= buf.bytes(),
            "upload of {} bytes into {}",
            data.len(),
            buf.bytes()
        );
        // SAFETY: in bounds (checked), distinct allocations.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf.ptr.cast::<u8>(), data.len()) };
        Ok(())
    }

    fn download(&self, buf: &ShimBuf, out: &mut [u8]) -> Result<()> {
        assert!(
            out.len() <= buf.bytes(),
            "download of {} bytes from {}",
            out.len(),
            buf.bytes()
        );
        // SAFETY: in bounds (checked), distinct allocations.
        unsafe { std::ptr::copy_nonoverlapping(buf.ptr.cast::<u8>(), out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    fn copy(&self, src: &ShimBuf, dst: &mut ShimBuf, bytes: usize) -> Result<()> {
        assert!(bytes <= src.bytes() && bytes <= dst.bytes());
        // SAFETY: in bounds (checked); `ptr::copy` allows overlap.
        unsafe { std::ptr::copy(src.ptr.cast::<u8>(), dst.ptr.cast::<u8>(), bytes) };
        Ok(())
    }

    fn launch(
        &self,
        kernel: Kernel,
        grid: u32,
        block: u32,
        args: &[Arg<'_, ShimBuf>],
    ) -> Result<()> {
        enum V {
            P(*mut c_void),
            I(i32),
            F(f32),
            D(f64),
        }
        let mut vals: Vec<V> = args
            .iter()
            .map(|a| match a {
                Arg::Buf(b) => V::P(b.ptr.cast()),
                Arg::I32(v) => V::I(*v),
                Arg::F32(v) => V::F(*v),
                Arg::F64(v) => V::D(*v),
            })
            .collect();
        let mut ptrs: Vec<*mut c_void> = vals
            .iter_mut()
            .map(|v| match v {
                V::P(p) => (p as *mut *mut c_void).cast(),
                V::I(i) => (i as *mut i32).cast(),
                V::F(f) => (f as *mut f32).cast(),
                V::D(d) => (d as *mut f64).cast(),
            })
            .collect();
        // SAFETY: the argument lists follow the kernels' parameter lists (the
        // driver's and this file's), buffers are sized for the launches.
        unsafe { mer_flow_cudashim::launch(kernel.name(), grid, block, &mut ptrs) }
            .map_err(Error::Gpu)
    }
}

fn up(data: &[f32]) -> ShimBuf {
    let mut b = Shim.alloc(data.len() * 4).unwrap();
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_ne_bytes()).collect();
    Shim.upload(&mut b, &bytes).unwrap();
    b
}

fn up_i32(data: &[i32]) -> ShimBuf {
    let mut b = Shim.alloc(data.len() * 4).unwrap();
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_ne_bytes()).collect();
    Shim.upload(&mut b, &bytes).unwrap();
    b
}

fn down(b: &ShimBuf, n: usize) -> Vec<f32> {
    let mut bytes = vec![0u8; n * 4];
    Shim.download(b, &mut bytes).unwrap();
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_ne_bytes(c.try_into().unwrap()))
        .collect()
}

fn down_i32(b: &ShimBuf, n: usize) -> Vec<i32> {
    let mut bytes = vec![0u8; n * 4];
    Shim.download(b, &mut bytes).unwrap();
    bytes
        .chunks_exact(4)
        .map(|c| i32::from_ne_bytes(c.try_into().unwrap()))
        .collect()
}

fn grid(total: usize) -> u32 {
    total.div_ceil(256) as u32
}

struct Lcg(u64);
impl Lcg {
    /// Uniform in [lo, hi).
    fn next(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (hi - lo) * ((self.0 >> 40) as f32 / (1u64 << 24) as f32)
    }
    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.next(lo, hi)).collect()
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| if x == y { 0.0 } else { (x - y).abs() })
        .fold(0f32, f32::max)
}

const STEP_TOL: f32 = 1e-4;

fn check_step(what: &str, got: &[f32], expect: &[f32]) {
    let d = max_diff(got, expect);
    println!("{what}: max |GPU kernel - CPU| = {d:.3e}");
    assert!(d <= STEP_TOL, "{what}: max diff {d} > {STEP_TOL}");
}

/// The resize kernel on `nb` planes of `src` (`sw`x`sh` each) to `dw`x`dh`, with source
/// steps `ratio` per destination pixel and the values multiplied by `mul`.
fn shim_resize(
    src: &[f32],
    (sw, sh): (usize, usize),
    (dw, dh): (usize, usize),
    ratio: (f64, f64),
    mul: f32,
    nb: usize,
) -> Vec<f32> {
    let out = Shim.alloc(dw * dh * nb * 4).unwrap();
    let s = up(src);
    Shim.launch(
        Kernel::Resize,
        grid(dw * dh * nb),
        256,
        &[
            Arg::Buf(&s),
            Arg::I32(sw as i32),
            Arg::I32(sh as i32),
            Arg::Buf(&out),
            Arg::I32(dw as i32),
            Arg::I32(dh as i32),
            Arg::F64(ratio.0),
            Arg::F64(ratio.1),
            Arg::F32(mul),
            Arg::I32(nb as i32),
        ],
    )
    .unwrap();
    down(&out, dw * dh * nb)
}

#[test]
fn resize_step_matches_cpu() {
    let mut r = Lcg(1);
    // Pyramid levels by a factor, and flow rescaling to a size (times a factor).
    for &(sw, sh, f) in &[
        (112usize, 112usize, 0.8f64),
        (90, 90, 0.8),
        (37, 23, 0.5),
        (64, 48, 0.8),
    ] {
        let nb = 3;
        let src = r.vec(sw * sh * nb, 0.0, 255.0);
        let (dw, dh) = testing::pyramid_size(sw, sh, f);
        let got = shim_resize(&src, (sw, sh), (dw, dh), (1.0 / f, 1.0 / f), 1.0, nb);
        let expect: Vec<f32> = (0..nb)
            .flat_map(|b| testing::resize_by(&src[b * sw * sh..(b + 1) * sw * sh], sw, sh, f).0)
            .collect();
        check_step(&format!("resize {sw}x{sh} by {f}"), &got, &expect);
    }
    for &(sw, sh, dw, dh, mul) in &[
        (46usize, 46usize, 58usize, 58usize, 1.25f32),
        (72, 72, 90, 90, 1.25),
        (90, 90, 72, 72, 0.8),
        (23, 17, 40, 31, 1.0),
    ] {
        let nb = 2;
        let src = r.vec(sw * sh * nb, -3.0, 3.0);
        let ratio = (1.0 / (dw as f64 / sw as f64), 1.0 / (dh as f64 / sh as f64));
        let got = shim_resize(&src, (sw, sh), (dw, dh), ratio, mul, nb);
        let expect: Vec<f32> = (0..nb)
            .flat_map(|b| {
                testing::resize_to(&src[b * sw * sh..(b + 1) * sw * sh], sw, sh, dw, dh)
                    .into_iter()
                    .map(move |v| v * mul)
            })
            .collect();
        check_step(
            &format!("resize {sw}x{sh} to {dw}x{dh} times {mul}"),
            &got,
            &expect,
        );
    }
}

#[test]
fn gradient_step_matches_cpu() {
    let mut r = Lcg(2);
    let (w, h, nb) = (37, 29, 3);
    let n = w * h;
    let src = r.vec(n * nb, 0.0, 255.0);
    let (s, dx, dy) = (
        up(&src),
        Shim.alloc(n * nb * 4).unwrap(),
        Shim.alloc(n * nb * 4).unwrap(),
    );
    Shim.launch(
        Kernel::CenteredGradient,
        grid(n * nb),
        256,
        &[
            Arg::Buf(&s),
            Arg::Buf(&dx),
            Arg::Buf(&dy),
            Arg::I32(w as i32),
            Arg::I32(h as i32),
            Arg::I32(nb as i32),
        ],
    )
    .unwrap();
    let (mut ex, mut ey) = (Vec::new(), Vec::new());
    for b in 0..nb {
        let (x, y) = testing::centered_gradient(&src[b * n..(b + 1) * n], w, h);
        ex.extend(x);
        ey.extend(y);
    }
    check_step("centered gradient x", &down(&dx, n * nb), &ex);
    check_step("centered gradient y", &down(&dy, n * nb), &ey);
}

#[test]
fn warp_step_matches_cpu() {
    let mut r = Lcg(3);
    for &(w, h, amp) in &[(58usize, 58usize, 2.5f32), (41, 33, 9.0), (112, 112, 1.0)] {
        let nb = 2;
        let n = w * h;
        let i1 = r.vec(n * nb, 0.0, 255.0);
        let i0 = r.vec(n * nb, 0.0, 255.0);
        let mut i1x = Vec::new();
        let mut i1y = Vec::new();
        for b in 0..nb {
            let (x, y) = testing::centered_gradient(&i1[b * n..(b + 1) * n], w, h);
            i1x.extend(x);
            i1y.extend(y);
        }
        let mut u1 = r.vec(n * nb, -amp, amp);
        let u2 = r.vec(n * nb, -amp, amp);
        // Quantisation ties (x * 32 exactly half-way) and whole pixels.
        u1[5] = 0.015625;
        u1[6] = 0.046875;
        u1[7] = -1.0;
        let table = up(&testing::cubic_table());
        let bufs: Vec<ShimBuf> = [&i1, &i1x, &i1y, &i0, &u1, &u2]
            .iter()
            .map(|v| up(v))
            .collect();
        let outs: Vec<ShimBuf> = (0..4).map(|_| Shim.alloc(n * nb * 4).unwrap()).collect();
        let mut args: Vec<Arg<'_, ShimBuf>> = bufs.iter().map(Arg::Buf).collect();
        args.push(Arg::Buf(&table));
        args.extend(outs.iter().map(Arg::Buf));
        args.extend([Arg::I32(w as i32), Arg::I32(h as i32), Arg::I32(nb as i32)]);
        Shim.launch(Kernel::Warp, grid(n * nb), 256, &args).unwrap();
        let mut expect: [Vec<f32>; 4] = Default::default();
        for b in 0..nb {
            let s = b * n..(b + 1) * n;
            let e = testing::warp(
                &i1[s.clone()],
                &i1x[s.clone()],
                &i1y[s.clone()],
                &i0[s.clone()],
                &u1[s.clone()],
                &u2[s],
                w,
                h,
            );
            for k in 0..4 {
                expect[k].extend_from_slice(&e[k]);
            }
        }
        for (k, name) in ["I1w_x", "I1w_y", "|grad I1w|^2", "rho_c"]
            .iter()
            .enumerate()
        {
            check_step(
                &format!("warp {w}x{h} amp {amp}: {name}"),
                &down(&outs[k], n * nb),
                &expect[k],
            );
        }
    }
}

#[test]
#[allow(clippy::needless_range_loop)]
fn threshold_divergence_dual_steps_match_cpu() {
    let mut r = Lcg(4);
    let (w, h, nb) = (31, 27, 3);
    let n = w * h;
    let (l_t, theta, taut, gamma) = (0.045f32, 0.3f32, 0.25f32 / 0.3f32, 0.1f32);
    let ix = r.vec(n * nb, -20.0, 20.0);
    let iy = r.vec(n * nb, -20.0, 20.0);
    let mut grad: Vec<f32> = ix.iter().zip(&iy).map(|(a, b)| a * a + b * b).collect();
    grad[3] = 0.0; // the g <= FLT_EPSILON branch
    let rho = r.vec(n * nb, -30.0, 30.0);
    let u: [Vec<f32>; 3] = [
        r.vec(n * nb, -2.0, 2.0),
        r.vec(n * nb, -2.0, 2.0),
        r.vec(n * nb, -1.0, 1.0),
    ];
    let p: Vec<Vec<f32>> = (0..6).map(|_| r.vec(n * nb, -0.5, 0.5)).collect();
    // Pair 1 inactive: untouched.
    let active = up_i32(&[1, 0, 1]);
    for use_gamma in [false, true] {
        let (bx, by, bg, br) = (up(&ix), up(&iy), up(&grad), up(&rho));
        let bu: Vec<ShimBuf> = u.iter().map(|v| up(v)).collect();
        let bv: Vec<ShimBuf> = (0..3).map(|_| Shim.alloc(n * nb * 4).unwrap()).collect();
        let g = i32::from(use_gamma);
        Shim.launch(
            Kernel::Threshold,
            grid(n * nb),
            256,
            &[
                Arg::Buf(&bx),
                Arg::Buf(&by),
                Arg::Buf(&bg),
                Arg::Buf(&br),
                Arg::Buf(&bu[0]),
                Arg::Buf(&bu[1]),
                Arg::Buf(&bu[2]),
                Arg::Buf(&bv[0]),
                Arg::Buf(&bv[1]),
                Arg::Buf(&bv[2]),
                Arg::F32(l_t),
                Arg::F32(gamma),
                Arg::I32(g),
                Arg::Buf(&active),
                Arg::I32(n as i32),
                Arg::I32(nb as i32),
            ],
        )
        .unwrap();
        // Expected v: u + TH(rho), as the CPU's half-step A; zero (untouched) for the inactive pair.
        let mut ev: [Vec<f32>; 3] = [vec![0.0; n * nb], vec![0.0; n * nb], vec![0.0; n * nb]];
        for i in 0..n * nb {
            if i / n == 1 {
                continue;
            }
            let mut rr = rho[i] + (ix[i] * u[0][i] + iy[i] * u[1][i]);
            if use_gamma {
                rr += gamma * u[2][i];
            }
            let (t1, t2, k) = testing::threshold(rr, grad[i], ix[i], iy[i], l_t);
            ev[0][i] = u[0][i] + t1;
            ev[1][i] = u[1][i] + t2;
            if use_gamma {
                ev[2][i] = u[2][i] + k * gamma;
            }
        }
        let v: Vec<Vec<f32>> = bv.iter().map(|b| down(b, n * nb)).collect();
        for c in 0..if use_gamma { 3 } else { 2 } {
            check_step(
                &format!("threshold (gamma {use_gamma}) v{}", c + 1),
                &v[c],
                &ev[c],
            );
        }

        // Divergence + primal update, from these v.
        let bp: Vec<ShimBuf> = p.iter().map(|v| up(v)).collect();
        let du = Shim.alloc(n * nb * 4).unwrap();
        Shim.launch(
            Kernel::Divergence,
            grid(n * nb),
            256,
            &[
                Arg::Buf(&bp[0]),
                Arg::Buf(&bp[1]),
                Arg::Buf(&bp[2]),
                Arg::Buf(&bp[3]),
                Arg::Buf(&bp[4]),
                Arg::Buf(&bp[5]),
                Arg::Buf(&bv[0]),
                Arg::Buf(&bv[1]),
                Arg::Buf(&bv[2]),
                Arg::Buf(&bu[0]),
                Arg::Buf(&bu[1]),
                Arg::Buf(&bu[2]),
                Arg::Buf(&du),
                Arg::F32(theta),
                Arg::I32(g),
                Arg::Buf(&active),
                Arg::I32(w as i32),
                Arg::I32(h as i32),
                Arg::I32(nb as i32),
            ],
        )
        .unwrap();
        let mut eu = u.clone();
        let mut edu = vec![0f32; n * nb];
        for b in [0, 2] {
            let s = b * n..(b + 1) * n;
            let d: Vec<Vec<f32>> = (0..3)
                .map(|c| testing::divergence(&p[2 * c][s.clone()], &p[2 * c + 1][s.clone()], w, h))
                .collect();
            for i in 0..n {
                let j = b * n + i;
                let n1 = ev[0][j] + theta * d[0][i];
                let n2 = ev[1][j] + theta * d[1][i];
                let mut e = (n1 - u[0][j]) * (n1 - u[0][j]) + (n2 - u[1][j]) * (n2 - u[1][j]);
                if use_gamma {
                    let n3 = ev[2][j] + theta * d[2][i];
                    e += (n3 - u[2][j]) * (n3 - u[2][j]);
                    eu[2][j] = n3;
                }
                eu[0][j] = n1;
                eu[1][j] = n2;
                edu[j] = e;
            }
        }
        let gu: Vec<Vec<f32>> = bu.iter().map(|b| down(b, n * nb)).collect();
        for c in 0..if use_gamma { 3 } else { 2 } {
            check_step(
                &format!("divergence + primal update (gamma {use_gamma}) u{}", c + 1),
                &gu[c],
                &eu[c],
            );
        }
        let gdu = down(&du, n * nb);
        check_step(
            &format!("squared update (gamma {use_gamma})"),
            &gdu[..n],
            &edu[..n],
        );
        check_step(
            &format!("squared update (gamma {use_gamma}) pair 2"),
            &gdu[2 * n..],
            &edu[2 * n..],
        );

        // Dual update from the new u.
        Shim.launch(
            Kernel::Dual,
            grid(n * nb),
            256,
            &[
                Arg::Buf(&bu[0]),
                Arg::Buf(&bu[1]),
                Arg::Buf(&bu[2]),
                Arg::Buf(&bp[0]),
                Arg::Buf(&bp[1]),
                Arg::Buf(&bp[2]),
                Arg::Buf(&bp[3]),
                Arg::Buf(&bp[4]),
                Arg::Buf(&bp[5]),
                Arg::F32(taut),
                Arg::I32(g),
                Arg::Buf(&active),
                Arg::I32(w as i32),
                Arg::I32(h as i32),
                Arg::I32(nb as i32),
            ],
        )
        .unwrap();
        let mut ep = p.clone();
        for b in [0, 2] {
            let s = b * n..(b + 1) * n;
            for c in 0..if use_gamma { 3 } else { 2 } {
                let (lo, hi) = ep.split_at_mut(2 * c + 1);
                testing::dual_update(
                    &eu[c][s.clone()],
                    &mut lo[2 * c][s.clone()],
                    &mut hi[0][s.clone()],
                    w,
                    h,
                    taut,
                );
            }
        }
        for c in 0..if use_gamma { 6 } else { 4 } {
            check_step(
                &format!(
                    "dual update (gamma {use_gamma}) p{}{}",
                    c / 2 + 1,
                    c % 2 + 1
                ),
                &down(&bp[c], n * nb),
                &ep[c],
            );
        }
    }
}

#[test]
fn median_step_matches_cpu() {
    let mut r = Lcg(5);
    let (w, h, nb) = (23, 19, 3);
    let n = w * h;
    let mut src = r.vec(n * nb, -3.0, 3.0);
    // Ties.
    for v in src.iter_mut().step_by(3) {
        *v = (*v * 2.0).round() / 2.0;
    }
    let active = up_i32(&[1, 0, 1]);
    for k in [3usize, 5] {
        let (s, d) = (up(&src), Shim.alloc(n * nb * 4).unwrap());
        Shim.launch(
            Kernel::Median,
            grid(n * nb),
            256,
            &[
                Arg::Buf(&s),
                Arg::Buf(&d),
                Arg::I32(k as i32),
                Arg::Buf(&active),
                Arg::I32(w as i32),
                Arg::I32(h as i32),
                Arg::I32(nb as i32),
            ],
        )
        .unwrap();
        let mut expect = Vec::new();
        for b in 0..nb {
            let s = &src[b * n..(b + 1) * n];
            // A stopped pair is copied through unchanged.
            expect.extend(if b == 1 {
                s.to_vec()
            } else {
                testing::median(s, w, h, k)
            });
        }
        let got = down(&d, n * nb);
        check_step(&format!("median {k}x{k}"), &got, &expect);
        assert_eq!(got, expect, "a median is exact");
    }
}

/// OpenCV's stopping sum: f32, sequential, row order.
fn seq_sum(v: &[f32]) -> f32 {
    let mut e = 0f32;
    for &x in v {
        e += x;
    }
    e
}

#[test]
fn error_reduction_decides_as_opencv() {
    let mut r = Lcg(6);
    let (n, nb) = (46 * 46, 4);
    let du: Vec<f32> = (0..nb)
        .flat_map(|b| r.vec(n, 0.0, 1e-4 * (b as f32 + 1.0)).into_iter())
        .collect();
    let sums: Vec<f32> = (0..nb).map(|b| seq_sum(&du[b * n..(b + 1) * n])).collect();
    let bdu = up(&du);
    let partial = Shim.alloc(nb * 256 * 8).unwrap();
    let error = Shim.alloc(nb * 4).unwrap();
    // Thresholds far below, far above, and exactly at / one ulp under each pair's own f32 sum
    // (where only the sequential f32 sum decides).
    let mut cases = vec![1e-9f32, 10.0];
    for &s in &sums {
        cases.push(s);
        cases.push(f32::from_bits(s.to_bits() - 1));
        cases.push(f32::from_bits(s.to_bits() + 1));
    }
    for eps in cases {
        let active = up_i32(&vec![1; nb]);
        Shim.launch(
            Kernel::ErrorPartial,
            nb as u32,
            256,
            &[
                Arg::Buf(&bdu),
                Arg::Buf(&partial),
                Arg::Buf(&active),
                Arg::I32(n as i32),
                Arg::I32(nb as i32),
            ],
        )
        .unwrap();
        Shim.launch(
            Kernel::ErrorDecide,
            1,
            64,
            &[
                Arg::Buf(&partial),
                Arg::I32(256),
                Arg::Buf(&bdu),
                Arg::Buf(&error),
                Arg::Buf(&active),
                Arg::F32(eps),
                Arg::I32(n as i32),
                Arg::I32(nb as i32),
            ],
        )
        .unwrap();
        let got = down_i32(&active, nb);
        let errs = down(&error, nb);
        for b in 0..nb {
            let go_on = sums[b] > eps;
            assert_eq!(
                got[b] != 0,
                go_on,
                "pair {b}: eps {eps:e}, OpenCV's sum {:e}",
                sums[b]
            );
            assert_eq!(
                errs[b] > eps,
                go_on,
                "pair {b}: error {} on the wrong side of {eps:e}",
                errs[b]
            );
            let rel = ((errs[b] - sums[b]) / sums[b]).abs();
            assert!(rel < 1e-3, "error value {} vs sum {}", errs[b], sums[b]);
        }
    }
    println!(
        "error reduction: decisions equal OpenCV's sequential f32 sum on {} thresholds",
        2 + 3 * nb
    );
}

/// [`pairs::compare`] for this file's GPU path.
fn compare(what: &str, gpu: &Flow, cpu: &Flow) -> f64 {
    pairs::compare(what, "GPU kernels", gpu, cpu)
}

#[test]
fn whole_flows_match_cpu_in_a_batch() {
    let params = TvL1Params::default();
    let cpu = TvL1::new(params.clone()).unwrap();
    // Pairs that stop at different iterations (no motion stops at once) share each launch.
    let pairs: Vec<(GrayImage, GrayImage)> =
        [(1u32, 0.3f32), (2, 1.0), (3, 2.5), (4, 0.0), (5, 6.0)]
            .iter()
            .map(|&(s, a)| pair(112, 112, s, a))
            .collect();
    let refs: Vec<(&GrayImage, &GrayImage)> = pairs.iter().map(|(a, b)| (a, b)).collect();
    // How often the host polls the stop flags changes no result.
    for check_every in [2, 7] {
        let gpu = GpuTvL1::with_backend(Shim, params.clone())
            .unwrap()
            .with_check_every(check_every);
        let flows = gpu.compute_batch(&refs);
        for (k, ((a, b), f)) in pairs.iter().zip(flows).enumerate() {
            compare(
                &format!("112x112 pair {k} (batch of 5, poll every {check_every})"),
                &f.unwrap(),
                &cpu.compute(a, b).unwrap(),
            );
        }
    }
}

#[test]
fn whole_flows_match_cpu_with_other_parameters() {
    let sets = [
        (
            "nscales 3, warps 3, median 3, eps 0.02, scale 0.5",
            TvL1Params {
                nscales: 3,
                warps: 3,
                median_filtering: 3,
                epsilon: 0.02,
                scale_step: 0.5,
                ..Default::default()
            },
        ),
        (
            "no median, 10 inner, 3 outer",
            TvL1Params {
                median_filtering: 1,
                inner_iterations: 10,
                outer_iterations: 3,
                ..Default::default()
            },
        ),
        (
            "gamma 0.1",
            TvL1Params {
                gamma: 0.1,
                ..Default::default()
            },
        ),
    ];
    for (k, (name, params)) in sets.into_iter().enumerate() {
        let (a, b) = pair(72, 60, 10 + k as u32, 1.5);
        let cpu = TvL1::new(params.clone()).unwrap().compute(&a, &b).unwrap();
        let gpu = GpuTvL1::with_backend(Shim, params)
            .unwrap()
            .compute(&a, &b)
            .unwrap();
        compare(&format!("72x60, {name}"), &gpu, &cpu);
    }
}

#[test]
fn mixed_sizes_errors_and_initial_flow() {
    let params = TvL1Params {
        warps: 2,
        ..Default::default()
    };
    let cpu = TvL1::new(params.clone()).unwrap();
    let gpu = GpuTvL1::with_backend(Shim, params)
        .unwrap()
        .with_max_batch(2);
    let p1 = pair(40, 36, 20, 1.0);
    let p2 = pair(56, 40, 21, 2.0);
    let p3 = pair(40, 36, 22, 0.5);
    let p4 = pair(40, 36, 23, 1.5);
    let odd = pair(41, 36, 24, 1.0);
    // Two sizes, a size mismatch, and three pairs of one size over a batch limit of 2.
    let batch = [
        (&p1.0, &p1.1),
        (&p2.0, &p2.1),
        (&p1.0, &odd.1),
        (&p3.0, &p3.1),
        (&p4.0, &p4.1),
    ];
    let out = gpu.compute_batch(&batch);
    assert!(matches!(out[2], Err(Error::SizeMismatch { .. })));
    for k in [0, 1, 3, 4] {
        let (a, b) = batch[k];
        compare(
            &format!("mixed batch, pair {k} ({}x{})", a.width(), a.height()),
            out[k].as_ref().unwrap(),
            &cpu.compute(a, b).unwrap(),
        );
    }
    // Initial flow (OpenCV's useInitialFlow).
    let init = Flow::new(
        40,
        36,
        (0..40 * 36 * 2)
            .map(|i| if i % 2 == 0 { 0.4 } else { -0.2 })
            .collect(),
    )
    .unwrap();
    let mut ws = mer_flow::Workspace::default();
    let mut expect = Flow::zeros(1, 1).unwrap();
    cpu.compute_into(&mut ws, &p1.0, &p1.1, Some(&init), &mut expect)
        .unwrap();
    compare(
        "initial flow",
        &gpu.compute_with_initial(&p1.0, &p1.1, &init).unwrap(),
        &expect,
    );
}
