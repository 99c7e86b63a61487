//! The CUDA path on a real GPU against the CPU path: each flow within 1e-3 px
//! mean end-point error, single pairs and a batch. Skips, saying why, when no
//! GPU (driver, device or NVRTC) is present; with `MER_FLOW_REQUIRE_GPU=1` a
//! missing GPU is a failure (for GPU machines' CI).
//!
//! Run on a GPU machine: see the `mer_flow::cuda` module documentation.

#[path = "common/pairs.rs"]
mod pairs;
use pairs::pair;

use mer_flow::cuda::CudaTvL1;
use mer_flow::{Device, Error, Flow, GrayImage, TvL1, TvL1Params};

fn gpu_or_skip() -> bool {
    match Device::Cuda(0).check() {
        Ok(()) => true,
        Err(e) if std::env::var("MER_FLOW_REQUIRE_GPU").is_ok_and(|v| v == "1") => {
            panic!("MER_FLOW_REQUIRE_GPU=1 but: {e}")
        }
        Err(e) => {
            println!("SKIPPED (no GPU here): {e}");
            false
        }
    }
}

/// [`pairs::compare`] for this file's GPU path.
fn compare(what: &str, gpu: &Flow, cpu: &Flow) -> f64 {
    pairs::compare(what, "CUDA", gpu, cpu)
}

#[test]
fn cuda_flows_match_cpu() {
    if !gpu_or_skip() {
        return;
    }
    let params = TvL1Params::default();
    let cpu = TvL1::new(params.clone()).unwrap();
    let gpu = CudaTvL1::new(params, 0).unwrap();
    println!("device: {}", gpu.backend().name().unwrap());
    for (w, h, seed, amp) in [
        (112, 112, 1, 0.5),
        (112, 112, 2, 2.5),
        (256, 256, 3, 1.5),
        (97, 61, 4, 1.0),
    ] {
        let (a, b) = pair(w, h, seed, amp);
        compare(
            &format!("{w}x{h} amp {amp}"),
            &gpu.compute(&a, &b).unwrap(),
            &cpu.compute(&a, &b).unwrap(),
        );
        // Same through the device choice of the CPU path's API.
        compare(
            &format!("{w}x{h} amp {amp} via compute_on"),
            &cpu.compute_on(Device::Cuda(0), &a, &b).unwrap(),
            &cpu.compute(&a, &b).unwrap(),
        );
    }
}

#[test]
fn cuda_batch_matches_cpu() {
    if !gpu_or_skip() {
        return;
    }
    let params = TvL1Params::default();
    let cpu = TvL1::new(params.clone()).unwrap();
    let pairs: Vec<(GrayImage, GrayImage)> = (0..300)
        .map(|i| pair(112, 112, i, 0.2 + (i % 10) as f32 * 0.3))
        .collect();
    let mut refs: Vec<(&GrayImage, &GrayImage)> = pairs.iter().map(|(a, b)| (a, b)).collect();
    let odd = pair(113, 112, 0, 0.0);
    refs.push((&pairs[0].0, &odd.1));
    let t = std::time::Instant::now();
    let got = cpu.compute_batch_on(Device::Cuda(0), &refs);
    println!("{} pairs on the GPU in {:.2?}", refs.len(), t.elapsed());
    let t = std::time::Instant::now();
    let expect = cpu.compute_batch(&refs);
    println!("{} pairs on the CPU in {:.2?}", refs.len(), t.elapsed());
    assert!(matches!(got[300], Err(Error::SizeMismatch { .. })));
    let mut worst = 0f64;
    for k in 0..300 {
        let epe = got[k]
            .as_ref()
            .unwrap()
            .mean_epe(expect[k].as_ref().unwrap())
            .unwrap();
        worst = worst.max(epe);
    }
    println!("batch of 300: worst mean EPE(CUDA, CPU) = {worst:.3e} px");
    assert!(worst <= 1e-3);
}

#[test]
fn gamma_and_other_parameters_on_cuda() {
    if !gpu_or_skip() {
        return;
    }
    for params in [
        TvL1Params {
            gamma: 0.1,
            ..Default::default()
        },
        TvL1Params {
            nscales: 3,
            warps: 3,
            median_filtering: 3,
            epsilon: 0.02,
            scale_step: 0.5,
            ..Default::default()
        },
    ] {
        let (a, b) = pair(112, 112, 9, 1.5);
        let cpu = TvL1::new(params.clone()).unwrap().compute(&a, &b).unwrap();
        let gpu = CudaTvL1::new(params.clone(), 0)
            .unwrap()
            .compute(&a, &b)
            .unwrap();
        compare(&format!("{params:?}"), &gpu, &cpu);
    }
}
