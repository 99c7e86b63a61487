//! Smooth textured test images for the CUDA checks (no OpenCV needed) and the check of a
//! GPU flow against the CPU's, shared by `cuda_gpu.rs` and `cuda_shim.rs`.

use mer_flow::{Flow, GrayImage};

/// A smooth textured image and the same moved by a local bump of `amp` px.
pub fn pair(w: usize, h: usize, seed: u32, amp: f32) -> (GrayImage, GrayImage) {
    let s = seed as f32;
    let img = |dx: f32, dy: f32| {
        let px = (0..w * h).map(|i| {
            let (x, y) = ((i % w) as f32, (i / w) as f32);
            let g = (-((x - w as f32 * (0.35 + 0.05 * (s % 3.0))).powi(2)
                + (y - h as f32 * 0.5).powi(2))
                / (0.02 * (w * h) as f32))
                .exp();
            let (x, y) = (x - dx * g, y - dy * g);
            (128.0
                + 50.0 * ((x * (0.2 + 0.01 * s)).sin() * (y * 0.17).cos())
                + 20.0 * ((x * 0.9 + y * 0.3 + s).sin())
                + 10.0 * (y * 0.6).sin())
            .round()
            .clamp(0.0, 255.0)
        });
        GrayImage::new(w, h, px.collect()).unwrap()
    };
    (img(0.0, 0.0), img(amp, -0.6 * amp))
}

/// Prints how far the flow of the GPU path (`side`: which one) is from the CPU's and asserts
/// a mean end-point error of at most 1e-3 px; returns that error.
pub fn compare(what: &str, side: &str, gpu: &Flow, cpu: &Flow) -> f64 {
    let epe = gpu.mean_epe(cpu).unwrap();
    let d = gpu
        .data()
        .iter()
        .zip(cpu.data())
        .map(|(x, y)| if x == y { 0.0 } else { (x - y).abs() })
        .fold(0f32, f32::max);
    let mag = cpu
        .mean_epe(&Flow::zeros(cpu.width(), cpu.height()).unwrap())
        .unwrap();
    println!("{what}: mean EPE({side}, CPU) = {epe:.3e} px, max |d| = {d:.3e} px (mean |flow| {mag:.3} px)");
    assert!(epe <= 1e-3, "{what}: mean EPE {epe} > 1e-3");
    epe
}
