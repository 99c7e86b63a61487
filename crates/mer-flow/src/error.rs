//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An image or flow with zero width or height.
    #[error("empty {what}: {width}x{height}")]
    Empty {
        what: &'static str,
        width: usize,
        height: usize,
    },
    /// Buffer length does not match the stated dimensions.
    #[error("{what}: expected {expected} values for {width}x{height}, found {found}")]
    BadLength {
        what: &'static str,
        width: usize,
        height: usize,
        expected: usize,
        found: usize,
    },
    /// Two inputs that must have the same size do not.
    #[error("size mismatch: {what} is {a_w}x{a_h} but {other} is {b_w}x{b_h}")]
    SizeMismatch {
        what: &'static str,
        a_w: usize,
        a_h: usize,
        other: &'static str,
        b_w: usize,
        b_h: usize,
    },
    /// A parameter outside its valid range.
    #[error("invalid parameter {name} = {value}: {why}")]
    BadParam {
        name: &'static str,
        value: String,
        why: &'static str,
    },
    /// A file could not be read or written (the path is in the message).
    #[error(transparent)]
    File(#[from] mer_common::Error),
    #[error("{path}: {why}")]
    Format { path: PathBuf, why: String },
    /// The GPU path was asked for but is not available.
    #[error("GPU path unavailable: {0}")]
    Gpu(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
