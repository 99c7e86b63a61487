//! Runs one synthetic 112x112 pair many times (for profilers): `cargo run --release -p mer-flow --example profile_pair -- [N] [SIZE]`.
use mer_flow::{Flow, GrayImage, TvL1, TvL1Params, Workspace};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(20, |s| s.parse().expect("N"));
    let size: usize = args.next().map_or(112, |s| s.parse().expect("SIZE"));
    let img = |shift: f32| {
        let px = (0..size * size).map(|i| {
            let (x, y) = ((i % size) as f32, (i / size) as f32);
            let bump = shift * (-((x - 40.0).powi(2) + (y - 60.0).powi(2)) / 200.0).exp();
            (128.0
                + 50.0 * ((x - bump) * 0.2).sin() * (y * 0.17).cos()
                + 20.0 * ((x - bump) * 0.9).sin())
            .round()
        });
        GrayImage::new(size, size, px.collect()).unwrap()
    };
    let (a, b) = (img(0.0), img(1.5));
    let tv = TvL1::new(TvL1Params::default())
        .unwrap()
        .with_parallel_from(usize::MAX);
    let mut ws = Workspace::default();
    let mut out = Flow::zeros(1, 1).unwrap();
    let t = std::time::Instant::now();
    for _ in 0..n {
        tv.compute_into(&mut ws, &a, &b, None, &mut out).unwrap();
    }
    println!(
        "{:.2} ms per pair",
        t.elapsed().as_secs_f64() * 1e3 / n as f64
    );
}
