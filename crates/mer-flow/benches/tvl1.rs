//! Ours vs OpenCV's DualTVL1 (Debian's build through the `opencv` crate), same
//! parameters (OpenCV's defaults), same pairs.
//!
//! - `tvl1_single/{ours,opencv}/WxH`: one pair at one thread each (rayon pool of
//!   one thread for ours, `cv::setNumThreads(1)` for OpenCV).
//! - `tvl1_batch/{ours,opencv}/112x112x64`: 64 pairs on all cores (ours:
//!   `compute_batch`; OpenCV: one pair per rayon task, each OpenCV call single-threaded).
//!
//! Run: `cargo bench -p mer-flow --bench tvl1`. The two sides of each size are
//! measured back to back; quote their ratio.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mer_flow::{Flow, GrayImage, TvL1, TvL1Params, Workspace};
use rayon::prelude::*;
use std::hint::black_box;

fn single(c: &mut Criterion) {
    opencv::core::set_num_threads(1).unwrap();
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let params = TvL1Params::default();
    let ours = TvL1::new(params.clone()).unwrap();
    let mut g = c.benchmark_group("tvl1_single");
    g.sample_size(10);
    for (w, h) in [(112, 112), (256, 256), (640, 480)] {
        let (a, b) = if w == h {
            let (a, b, _) = face_pair(w, 11, 1.5);
            (a, b)
        } else {
            face_pair_wh(w, h, 11, 3.0)
        };
        let (ga, gb) = (gray(w, h, &a), gray(w, h, &b));
        let (ma, mb) = (mat_u8(w, h, &a), mat_u8(w, h, &b));
        let id = format!("{w}x{h}");
        let mut ws = Workspace::default();
        let mut out = Flow::zeros(1, 1).unwrap();
        g.bench_with_input(BenchmarkId::new("ours", &id), &(), |bch, _| {
            one.install(|| {
                bch.iter(|| {
                    ours.compute_into(&mut ws, black_box(&ga), black_box(&gb), None, &mut out)
                        .unwrap()
                })
            })
        });
        let mut tv = opencv_tvl1(&params);
        g.bench_with_input(BenchmarkId::new("opencv", &id), &(), |bch, _| {
            bch.iter(|| black_box(opencv_flow(&mut tv, w, h, black_box(&ma), black_box(&mb))))
        });
    }
    g.finish();
}

fn batch(c: &mut Criterion) {
    opencv::core::set_num_threads(1).unwrap();
    let params = TvL1Params::default();
    let ours = TvL1::new(params.clone()).unwrap();
    let n = 64;
    let (pairs, grays) = batch_pairs(n);
    let refs: Vec<(&GrayImage, &GrayImage)> = grays.iter().map(|(a, b)| (a, b)).collect();
    let mut g = c.benchmark_group("tvl1_batch");
    g.sample_size(10);
    g.throughput(criterion::Throughput::Elements(n as u64));
    let id = format!("112x112x{n}");
    g.bench_function(BenchmarkId::new("ours", &id), |bch| {
        bch.iter(|| black_box(ours.compute_batch(&refs)))
    });
    g.bench_function(BenchmarkId::new("opencv", &id), |bch| {
        bch.iter(|| {
            pairs
                .par_iter()
                .map_init(
                    || opencv_tvl1(&params),
                    |tv, (a, b)| {
                        opencv_flow(tv, 112, 112, &mat_u8(112, 112, a), &mat_u8(112, 112, b))
                    },
                )
                .collect::<Vec<_>>()
        })
    });
    g.finish();
}

criterion_group!(benches, single, batch);
criterion_main!(benches);
