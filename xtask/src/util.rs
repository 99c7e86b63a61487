//! Shared helpers of the command line.

use std::path::PathBuf;

/// Logs go to stderr through `tracing`; `RUST_LOG` filters them (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// The workspace root (the parent of `xtask/`).
#[allow(dead_code)]
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask has a parent").to_path_buf()
}

/// Size the global rayon pool (`None`: all cores). Call before any parallel work.
pub fn set_threads(threads: Option<usize>) -> anyhow::Result<()> {
    if let Some(n) = threads {
        anyhow::ensure!(n >= 1, "--threads must be at least 1");
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global()?;
    }
    Ok(())
}

/// Reads an 8-bit image as OpenCV does (colour), optionally resizes it to
/// `size` x `size` (bicubic), then converts it to gray (`COLOR_BGR2GRAY`).
pub fn load_gray(path: &std::path::Path, size: Option<usize>) -> anyhow::Result<mer_flow::GrayImage> {
    use anyhow::Context;
    use opencv::{core, imgcodecs, imgproc, prelude::*};
    let p = path.to_str().with_context(|| format!("{}: path is not UTF-8", path.display()))?;
    if !path.is_file() {
        anyhow::bail!("{}: no such image file", path.display());
    }
    let img = imgcodecs::imread(p, imgcodecs::IMREAD_COLOR).with_context(|| format!("{}: unreadable image", path.display()))?;
    if img.empty() {
        anyhow::bail!("{}: not an image OpenCV can read", path.display());
    }
    if img.depth() != core::CV_8U {
        anyhow::bail!("{}: expected an 8-bit image, found OpenCV depth {}", path.display(), img.depth());
    }
    let img = match size {
        Some(n) => {
            let mut r = core::Mat::default();
            imgproc::resize(&img, &mut r, core::Size::new(n as i32, n as i32), 0.0, 0.0, imgproc::INTER_CUBIC)?;
            r
        }
        None => img,
    };
    let mut g = core::Mat::default();
    imgproc::cvt_color_def(&img, &mut g, imgproc::COLOR_BGR2GRAY)?;
    let (w, h) = (g.cols() as usize, g.rows() as usize);
    let g = if g.is_continuous() { g } else { g.try_clone()? };
    Ok(mer_flow::GrayImage::from_u8(w, h, g.data_bytes()?)?)
}
