//! Training-step and inference throughput of Off-TANet ('ta') on the CPU, batch 64 (and 1),
//! 3x112x112 inputs. Thread count: `RAYON_NUM_THREADS` (candle and gemm size their pools
//! from it), e.g. `RAYON_NUM_THREADS=1 cargo bench -p mer-model`.

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use mer_model::{ModelConfig, OffTaNet, Trainer};

fn bench(c: &mut Criterion) {
    let dev = Device::Cpu;
    let cfg = ModelConfig::default();

    let mut g = c.benchmark_group("offtanet_ta");
    g.sampling_mode(SamplingMode::Flat).sample_size(10);
    let model = OffTaNet::random(&cfg, &dev).unwrap();
    for batch in [1usize, 64] {
        let x = Tensor::randn(0f32, 1.0, (batch, 3, 112, 112), &dev).unwrap();
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("inference_b{batch}_cpu"), |b| {
            b.iter(|| model.forward_t(&x, false).unwrap())
        });
    }

    let x = Tensor::randn(0f32, 1.0, (64, 3, 112, 112), &dev).unwrap();
    let labels = Tensor::new(&(0..64u32).map(|i| i % 3).collect::<Vec<_>>()[..], &dev).unwrap();
    let mut trainer = Trainer::new(OffTaNet::random(&cfg, &dev).unwrap()).unwrap();
    g.throughput(Throughput::Elements(64));
    g.bench_function("train_step_b64_cpu", |b| {
        b.iter(|| trainer.step(&x, &labels).unwrap())
    });
    // The same step on candle's own ops (the straight port), for the before/after ratio.
    g.bench_function("train_step_b64_cpu_plain_candle", |b| {
        b.iter(|| mer_model::with_plain_ops(|| trainer.step(&x, &labels).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
