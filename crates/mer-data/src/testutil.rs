//! Helpers shared by the crate's tests.

use std::path::{Path, PathBuf};

/// The reference folder (`MER_REFERENCE_DIR`, else `../shared/reference` beside the
/// workspace root). `None` (with a printed reason) when absent, except under `CI=true`,
/// where absence fails the test.
pub(crate) fn reference_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("MER_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference"));
    if dir.join("combined_3class.csv").is_file() {
        return Some(dir);
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        !ci,
        "reference folder {} is missing (CI=true: it must be present)",
        dir.display()
    );
    eprintln!(
        "skipped: reference folder {} not found (set MER_REFERENCE_DIR)",
        dir.display()
    );
    None
}

/// Creates empty files `<dir>/<prefix><n>.jpg` for each n (the indexer only checks names).
pub(crate) fn touch_frames(dir: &Path, prefix: &str, frames: impl IntoIterator<Item = u32>) {
    std::fs::create_dir_all(dir).unwrap();
    for n in frames {
        std::fs::write(dir.join(format!("{prefix}{n}.jpg")), b"").unwrap();
    }
}
