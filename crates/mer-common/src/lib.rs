//! # mer-common: the helpers every off-tanet-rs crate shares
//!
//! One home for the small things the flow, data, model and evaluation crates all need, so
//! that each exists once and behaves the same everywhere:
//!
//! - [`fmt`]: numbers written for people (`2,664,475`).
//! - [`fs`]: atomic writes with one durability rule (temporary file beside the target,
//!   contents flushed to disk, then a rename; parent folders created; the temporary file
//!   removed on failure).
//! - [`npy`]: NumPy `.npy` read (`<f4`, `<f8`, `<i8`, versions 1-3) and write (`<f4`,
//!   version 1.0, atomic).
//! - [`rng`]: SplitMix64, the seeded generator of the synthetic database and of training,
//!   with both of their seeding rules kept bit for bit.
//! - [`names`]: natural order (`EP2` < `EP10`) and file-name-safe stems.
//! - [`hash`]: FNV-1a 64, the stable hash of cache keys and fingerprints.
//! - `csv` (feature `csv`): headed CSV tables read with the `csv` crate, every row with
//!   its line number for error messages.
//!
//! It depends on `thiserror` only, so that the light crates (the flow kernel, the model)
//! can use it without pulling anything in.
//!
//! ```
//! use mer_common::{fs, npy, rng::{Seeding, SplitMix64}};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("out/x.npy");
//! let mut r = SplitMix64::new(Seeding::TRAINING, 7, &[1, 2]);
//! let data: Vec<f32> = (0..6).map(|_| r.f64() as f32).collect();
//! npy::write_f32(&path, &[2, 3], &data)?; // atomic, creates `out/`
//! let back = npy::read(&path)?;
//! assert_eq!(back.shape, vec![2, 3]);
//! assert_eq!(back.data, npy::NpyData::F32(data));
//! fs::write_atomic(&dir.path().join("note.txt"), b"done")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(feature = "csv")]
pub mod csv;
pub mod fmt;
pub mod fs;
pub mod hash;
pub mod names;
pub mod npy;
pub mod rng;

use std::path::PathBuf;

/// What can go wrong in these helpers; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading, writing, renaming or creating `path` failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A CSV table is malformed (header, quoting, field count).
    #[error("{}, line {line}: {message}", path.display())]
    Csv {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// `path` is not a valid `.npy` file (or the data do not fit the shape).
    #[error("{}: {why}", path.display())]
    Npy {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
