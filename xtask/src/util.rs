//! Shared helpers of the command line.

use std::path::PathBuf;

/// Logs go to stderr through `tracing`; `RUST_LOG` filters them (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Plain text in files (Slurm logs, redirected runs), colours on a terminal.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// The workspace root (the parent of `xtask/`).
#[allow(dead_code)]
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_path_buf()
}

/// Size the global rayon pool (`None`: all cores). Call before any parallel work.
pub fn set_threads(threads: Option<usize>) -> anyhow::Result<()> {
    if let Some(n) = threads {
        anyhow::ensure!(n >= 1, "--threads must be at least 1");
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()?;
    }
    Ok(())
}

/// Reads an 8-bit image as OpenCV does (colour), optionally resizes it to
/// `size` x `size` (bicubic), then converts it to gray (`COLOR_BGR2GRAY`): the
/// data crate's preprocessing.
pub fn load_gray(
    path: &std::path::Path,
    size: Option<usize>,
) -> anyhow::Result<mer_flow::GrayImage> {
    use mer_data::preprocess::{read_color, to_gray, to_gray_native};
    let bgr = read_color(path)?;
    let (w, h, px) = match size {
        Some(n) => (n, n, to_gray(&bgr, n)?),
        None => to_gray_native(&bgr)?,
    };
    Ok(mer_flow::GrayImage::from_u8(w, h, &px)?)
}
