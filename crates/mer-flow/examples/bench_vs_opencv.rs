//! Ours vs OpenCV's DualTVL1, interleaved: each round times one call of each
//! side back to back (alternating which goes first), many rounds, medians and
//! their ratio. Robust on a shared, noisy machine where criterion's
//! one-side-then-the-other runs drift apart.
//!
//! `cargo run --release -p mer-flow --example bench_vs_opencv -- [ROUNDS]`

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use mer_flow::{Flow, GrayImage, TvL1, TvL1Params, Workspace};
use rayon::prelude::*;
use std::time::Instant;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(15, |s| s.parse().expect("ROUNDS"));
    opencv::core::set_num_threads(1).unwrap();
    let params = TvL1Params::default();
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let ours = TvL1::new(params.clone()).unwrap();
    println!("| size | ours (s) | OpenCV (s) | OpenCV / ours | mean EPE ours vs OpenCV |");
    println!("|---|---|---|---|---|");
    for (w, h) in [(112, 112), (256, 256), (640, 480)] {
        let (a, b) = if w == h {
            let (a, b, _) = face_pair(w, 11, 1.5);
            (a, b)
        } else {
            face_pair_wh(w, h, 11, 3.0)
        };
        let (ga, gb) = (gray(w, h, &a), gray(w, h, &b));
        let (ma, mb) = (mat_u8(w, h, &a), mat_u8(w, h, &b));
        let mut tv = opencv_tvl1(&params);
        let mut ws = Workspace::default();
        let mut out = Flow::zeros(1, 1).unwrap();
        let n = if w * h > 100_000 {
            rounds.div_ceil(3).max(5)
        } else {
            rounds
        };
        let (mut to, mut tc) = (Vec::new(), Vec::new());
        let mut theirs = Flow::zeros(1, 1).unwrap();
        for r in 0..n + 1 {
            let mut run_ours = || {
                let t = Instant::now();
                one.install(|| {
                    ours.compute_into(&mut ws, &ga, &gb, None, &mut out)
                        .unwrap()
                });
                t.elapsed().as_secs_f64()
            };
            let mut run_cv = || {
                let t = Instant::now();
                theirs = opencv_flow(&mut tv, w, h, &ma, &mb);
                t.elapsed().as_secs_f64()
            };
            let (x, y) = if r % 2 == 0 {
                (run_ours(), run_cv())
            } else {
                let y = run_cv();
                (run_ours(), y)
            };
            if r > 0 {
                to.push(x);
                tc.push(y);
            }
        }
        let (mo, mc) = (median(&mut to), median(&mut tc));
        println!(
            "| {w}x{h}, 1 thread | {mo:.4} | {mc:.4} | {:.2}x | {:.1e} |",
            mc / mo,
            out.mean_epe(&theirs).unwrap()
        );
    }
    // Batch throughput: 64 pairs of 112x112 on all cores.
    let (pairs, grays) = batch_pairs(64);
    let refs: Vec<(&GrayImage, &GrayImage)> = grays.iter().map(|(a, b)| (a, b)).collect();
    let mats: Vec<_> = pairs
        .iter()
        .map(|(a, b)| (mat_u8(112, 112, a), mat_u8(112, 112, b)))
        .collect();
    let (mut to, mut tc) = (Vec::new(), Vec::new());
    for _ in 0..rounds.div_ceil(3).max(3) {
        let t = Instant::now();
        let r = ours.compute_batch(&refs);
        assert!(r.iter().all(|f| f.is_ok()));
        to.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let _: Vec<Flow> = mats
            .par_iter()
            .map_init(
                || opencv_tvl1(&params),
                |tv, (a, b)| opencv_flow(tv, 112, 112, a, b),
            )
            .collect();
        tc.push(t.elapsed().as_secs_f64());
    }
    let (mo, mc) = (median(&mut to), median(&mut tc));
    let th = rayon::current_num_threads();
    println!(
        "| 64 x 112x112, {th} threads | {:.1} pairs/s | {:.1} pairs/s | {:.2}x | |",
        64.0 / mo,
        64.0 / mc,
        mc / mo
    );
}
