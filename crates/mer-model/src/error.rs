//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the model crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Reading or writing a file failed.
    #[error("{}: {err}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error (part of the message, not a separate source).
        err: std::io::Error,
    },
    /// A checkpoint lacks tensors the model needs.
    #[error("{source_name}: missing {} of {expected_count} expected tensors: {}; the checkpoint holds {found_count} tensors ({found_sample})", missing.len(), format_missing(missing))]
    MissingKeys {
        /// Where the tensors came from (a file name).
        source_name: String,
        /// The missing keys with their expected shapes.
        missing: Vec<(String, Vec<usize>)>,
        /// How many tensors the model expects.
        expected_count: usize,
        /// How many tensors the checkpoint holds.
        found_count: usize,
        /// A few of the checkpoint's keys.
        found_sample: String,
    },
    /// A checkpoint tensor has the wrong shape.
    #[error("{source_name}: tensor `{key}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// Where the tensors came from (a file name).
        source_name: String,
        /// The state-dict key.
        key: String,
        /// The shape the model needs.
        expected: Vec<usize>,
        /// The shape in the checkpoint.
        found: Vec<usize>,
    },
    /// A model input has the wrong shape.
    #[error("input: expected shape {expected}, found {found:?}")]
    InputShape {
        /// The expected shape, e.g. `[N, 3, 112, 112]`.
        expected: String,
        /// The shape found.
        found: Vec<usize>,
    },
    /// An unknown variant name.
    #[error("unknown model variant `{0}`: expected one of res, cbam, sa, bot, ta, all-ta")]
    UnknownVariant(String),
    /// An invalid model or training configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A weights file of an unknown kind.
    #[error("{}: unsupported weights file, expected a .pth or .safetensors extension", .0.display())]
    WeightsFormat(PathBuf),
    /// A shared helper's file operation failed (`.npy` read or write); the path is in the
    /// message.
    #[error(transparent)]
    File(#[from] mer_common::Error),
}

fn format_missing(missing: &[(String, Vec<usize>)]) -> String {
    const SHOWN: usize = 6;
    let mut s: Vec<String> = missing
        .iter()
        .take(SHOWN)
        .map(|(k, shape)| format!("`{k}` {shape:?}"))
        .collect();
    if missing.len() > SHOWN {
        s.push(format!("and {} more", missing.len() - SHOWN));
    }
    s.join(", ")
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
