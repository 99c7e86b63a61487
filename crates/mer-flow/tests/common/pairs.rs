//! Smooth textured test images for the CUDA checks (no OpenCV needed), shared by
//! `cuda_gpu.rs` and `cuda_shim.rs`.

use mer_flow::GrayImage;

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
