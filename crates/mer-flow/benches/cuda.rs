//! Batched 112x112 throughput (pairs per second) of the CUDA path beside the
//! CPU path's `compute_batch` on all cores. Needs a GPU; without one it prints
//! why and measures nothing.
//!
//! Run: `cargo bench -p mer-flow --features cuda --bench cuda` (NVRTC on
//! `LD_LIBRARY_PATH`, see the `mer_flow::cuda` module documentation).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mer_flow::cuda::CudaTvL1;
use mer_flow::{Device, GrayImage, TvL1, TvL1Params};
use std::hint::black_box;

fn batch(c: &mut Criterion) {
    if let Err(e) = Device::Cuda(0).check() {
        println!("cuda bench skipped: {e}");
        return;
    }
    let params = TvL1Params::default();
    let cpu = TvL1::new(params.clone()).unwrap();
    let mut g = c.benchmark_group("tvl1_cuda_batch");
    g.sample_size(10);
    for n in [64usize, 256, 1024] {
        let grays: Vec<(GrayImage, GrayImage)> = (0..n)
            .map(|i| {
                let (a, b, _) = face_pair(112, 100 + i as u32, 0.3 + (i % 8) as f32 * 0.35);
                (gray(112, 112, &a), gray(112, 112, &b))
            })
            .collect();
        let refs: Vec<(&GrayImage, &GrayImage)> = grays.iter().map(|(a, b)| (a, b)).collect();
        g.throughput(Throughput::Elements(n as u64));
        let id = format!("112x112x{n}");
        for max_batch in [64usize, 256] {
            let gpu = CudaTvL1::new(params.clone(), 0)
                .unwrap()
                .with_max_batch(max_batch);
            g.bench_function(BenchmarkId::new(format!("cuda_b{max_batch}"), &id), |bch| {
                bch.iter(|| black_box(gpu.compute_batch(black_box(&refs))))
            });
        }
        if n <= 256 {
            g.bench_function(BenchmarkId::new("cpu_all_cores", &id), |bch| {
                bch.iter(|| black_box(cpu.compute_batch(black_box(&refs))))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, batch);
criterion_main!(benches);
