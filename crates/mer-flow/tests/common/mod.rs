//! Test and benchmark support: face-like image pairs with a known, small, local
//! flow (like a micro-expression), and OpenCV's DualTVL1 as the reference peer.
#![allow(dead_code)]

use mer_flow::{Flow, GrayImage, TvL1Params};
use opencv::{core, optflow, prelude::*};

/// A procedural face-like image as a continuous function of (x, y) on a
/// `size`-pixel canvas: skin gradient, face ellipse, brows, eyes, nose, mouth,
/// fine texture. `seed` varies the face.
pub fn face(size: usize, seed: u32) -> impl Fn(f32, f32) -> f32 {
    let s = size as f32;
    let r = move |k: u32| {
        ((seed
            .wrapping_mul(2654435761)
            .wrapping_add(k.wrapping_mul(40503))
            >> 8)
            % 1000) as f32
            / 1000.0
    };
    let (fx, fy) = (0.5 + 0.04 * (r(1) - 0.5), 0.52 + 0.04 * (r(2) - 0.5));
    let (ax, ay) = (0.36 + 0.05 * r(3), 0.45 + 0.04 * r(4));
    let skin = 150.0 + 40.0 * r(5);
    let tex = 3.0 + 4.0 * r(6);
    let gauss = |x: f32, y: f32, cx: f32, cy: f32, sx: f32, sy: f32| {
        let dx = (x - cx) / sx;
        let dy = (y - cy) / sy;
        (-(dx * dx + dy * dy)).exp()
    };
    move |px: f32, py: f32| {
        let (x, y) = (px / s, py / s);
        let e = ((x - fx) / ax).powi(2) + ((y - fy) / ay).powi(2);
        let inside = 1.0 / (1.0 + ((e - 1.0) * 12.0).exp());
        let mut v = 60.0 + 30.0 * y + inside * (skin - 60.0 - 30.0 * y);
        for side in [-1.0f32, 1.0] {
            let ex = fx + side * 0.15;
            v -= 70.0 * gauss(x, y, ex, fy - 0.12, 0.05, 0.025); // eye
            v -= 45.0 * gauss(x, y, ex, fy - 0.22, 0.08, 0.015); // brow
            v -= 20.0 * gauss(x, y, fx + side * 0.04, fy + 0.05, 0.02, 0.02); // nostril
        }
        v -= 55.0 * gauss(x, y, fx, fy + 0.2, 0.12, 0.02); // mouth
        v += 12.0 * gauss(x, y, fx, fy - 0.02, 0.03, 0.12); // nose ridge
        v += tex
            * ((px * 1.7 + 3.0 * r(7)).sin() * (py * 1.3).cos()
                + 0.6 * (px * 0.9 + py * 2.1).sin());
        v
    }
}

/// A smooth local flow field: Gaussian bumps of displacement around the brows
/// and mouth corners, peak `amp` pixels.
pub fn bump_flow(size: usize, amp: f32) -> impl Fn(f32, f32) -> (f32, f32) {
    let s = size as f32;
    move |px: f32, py: f32| {
        let (x, y) = (px / s, py / s);
        let g = |cx: f32, cy: f32, r: f32| (-((x - cx).powi(2) + (y - cy).powi(2)) / (r * r)).exp();
        let brows = g(0.35, 0.30, 0.08) + g(0.65, 0.30, 0.08);
        let (lc, rc) = (g(0.38, 0.72, 0.07), g(0.62, 0.72, 0.07));
        let u = amp * (-0.4 * lc + 0.4 * rc + 0.1 * brows);
        let v = amp * (-1.0 * brows - 0.5 * (lc + rc));
        (u, v)
    }
}

/// A u8 pair (prev, next) of `size` x `size` and the ground-truth flow from prev to next.
pub fn face_pair(size: usize, seed: u32, amp: f32) -> (Vec<u8>, Vec<u8>, Flow) {
    let img = face(size, seed);
    let fl = bump_flow(size, amp);
    let q = |v: f32| v.round().clamp(0.0, 255.0) as u8;
    let mut a = Vec::with_capacity(size * size);
    let mut b = Vec::with_capacity(size * size);
    let mut gu = Vec::with_capacity(size * size);
    let mut gv = Vec::with_capacity(size * size);
    for y in 0..size {
        for x in 0..size {
            let (xf, yf) = (x as f32, y as f32);
            a.push(q(img(xf, yf)));
            // next(p) = prev(p - F(p)): solve the inverse by fixed point for accuracy.
            let (mut u, mut v) = fl(xf, yf);
            for _ in 0..4 {
                let (uu, vv) = fl(xf - u, yf - v);
                u = uu;
                v = vv;
            }
            b.push(q(img(xf - u, yf - v)));
            let (tu, tv) = fl(xf, yf);
            gu.push(tu);
            gv.push(tv);
        }
    }
    (a, b, Flow::from_planes(size, size, &gu, &gv).unwrap())
}

/// A non-square pair (for 640x480 benchmarks): the face image stretched.
pub fn face_pair_wh(w: usize, h: usize, seed: u32, amp: f32) -> (Vec<u8>, Vec<u8>) {
    let s = w.max(h);
    let img = face(s, seed);
    let fl = bump_flow(s, amp);
    let q = |v: f32| v.round().clamp(0.0, 255.0) as u8;
    let mut a = Vec::with_capacity(w * h);
    let mut b = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            let (xf, yf) = (x as f32, y as f32 + (s - h) as f32 / 2.0);
            a.push(q(img(xf, yf)));
            let (u, v) = fl(xf, yf);
            b.push(q(img(xf - u, yf - v)));
        }
    }
    (a, b)
}

pub fn gray(w: usize, h: usize, d: &[u8]) -> GrayImage {
    GrayImage::from_u8(w, h, d).unwrap()
}

/// The batch benchmarks' workload: `n` 112x112 face pairs of varied motion (0.3 to 2.75 px),
/// as raw bytes (for OpenCV) and as our images.
pub fn batch_pairs(n: u32) -> (Vec<(Vec<u8>, Vec<u8>)>, Vec<(GrayImage, GrayImage)>) {
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
        .map(|i| {
            let (a, b, _) = face_pair(112, 100 + i, 0.3 + (i % 8) as f32 * 0.35);
            (a, b)
        })
        .collect();
    let grays = pairs
        .iter()
        .map(|(a, b)| (gray(112, 112, a), gray(112, 112, b)))
        .collect();
    (pairs, grays)
}

/// OpenCV's DualTVL1 with the given parameters.
pub fn opencv_tvl1(p: &TvL1Params) -> core::Ptr<optflow::DualTVL1OpticalFlow> {
    optflow::DualTVL1OpticalFlow::create(
        p.tau,
        p.lambda,
        p.theta,
        p.nscales as i32,
        p.warps as i32,
        p.epsilon,
        p.inner_iterations as i32,
        p.outer_iterations as i32,
        p.scale_step,
        p.gamma,
        p.median_filtering as i32,
        false,
    )
    .unwrap()
}

pub fn mat_u8(w: usize, h: usize, d: &[u8]) -> core::Mat {
    core::Mat::new_rows_cols_with_data(h as i32, w as i32, d)
        .unwrap()
        .try_clone()
        .unwrap()
}

/// OpenCV's flow of a u8 pair.
pub fn opencv_flow(
    tv: &mut core::Ptr<optflow::DualTVL1OpticalFlow>,
    w: usize,
    h: usize,
    a: &core::Mat,
    b: &core::Mat,
) -> Flow {
    let mut out = core::Mat::default();
    tv.calc(a, b, &mut out).unwrap();
    let data: Vec<f32> = out
        .data_typed::<core::Vec2f>()
        .unwrap()
        .iter()
        .flat_map(|v| [v[0], v[1]])
        .collect();
    Flow::new(w, h, data).unwrap()
}
