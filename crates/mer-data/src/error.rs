//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong between a folder of face images and a feature tensor.
///
/// Errors about data name the file, sheet, row or sample and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read or written.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error (part of the message, not a separate source).
        error: std::io::Error,
    },
    /// A workbook could not be opened or one of its sheets could not be read.
    #[error("workbook {}: {message}", path.display())]
    Workbook {
        /// The workbook file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A sheet lacks a column the indexer needs.
    #[error("workbook {}, sheet `{sheet}`: no column `{column}`", path.display())]
    MissingColumn {
        /// The workbook file.
        path: PathBuf,
        /// The sheet.
        sheet: String,
        /// The missing column (a header name or a position).
        column: String,
    },
    /// A CSV sample list is malformed.
    #[error("{}, line {line}: {message}", path.display())]
    Csv {
        /// The CSV file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An image could not be read, decoded or written.
    #[error("image {}: {message}", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An OpenCV call failed outside of reading a given file.
    #[error("OpenCV, {context}: {error}")]
    OpenCv {
        /// What was being done.
        context: String,
        /// OpenCV's error.
        error: opencv::Error,
    },
    /// A sample could not be processed (flow, missing frames, unknown sample).
    #[error("sample {sample}: {message}")]
    Sample {
        /// `dataset/subject/sample`.
        sample: String,
        /// What is wrong.
        message: String,
    },
    /// A feature cache file is corrupt or does not match its key.
    #[error("feature cache {}: {message}", path.display())]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No database was found under a root folder.
    #[error("no database found under {}: expected CASME-coded-*.xls / Section A.xls, CASME2-coding-*.xlsx, CAS(ME)^2code_final*.xlsx or the casme1_cropped/casme2_cropped/casme^2_cropped folders", root.display())]
    NoDatabase {
        /// The searched folder.
        root: PathBuf,
    },
    /// A workbook could not be encoded.
    #[error("writing workbook {}: {error}", path.display())]
    WorkbookWrite {
        /// The file that was to be written.
        path: PathBuf,
        /// Why.
        #[source]
        error: crate::workbook::WriteError,
    },
    /// A shared helper's file operation failed (atomic write, `.npy`); the path is in
    /// the message.
    #[error(transparent)]
    File(#[from] mer_common::Error),
    /// The optical flow of a pair failed (or its parameters are invalid).
    #[error("{context}: {error}")]
    Flow {
        /// Which pair, or "TV-L1 parameters".
        context: String,
        /// The flow crate's error.
        #[source]
        error: mer_flow::Error,
    },
    /// A JSON file could not be encoded or decoded.
    #[error("{}: {error}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// serde_json's error.
        #[source]
        error: serde_json::Error,
    },
    /// A folder in the reference's combined layout has no sample list beside it.
    #[error("combined layout in {}: no sample list (combined_3class.csv beside it or in ../reference/); pass one", dir.display())]
    NoSampleList {
        /// The `*_cropped` folders' parent.
        dir: PathBuf,
    },
    /// An output folder holds something other than what the command would write there
    /// (nothing is deleted).
    #[error("{}: {message}", path.display())]
    Destination {
        /// The folder.
        path: PathBuf,
        /// What is there and what to do.
        message: String,
    },
    /// An argument is out of range.
    #[error("invalid argument: {0}")]
    Invalid(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A flow error without a pair to name (e.g. invalid TV-L1 parameters); where the pair is
/// known, [`Error::Flow`] is built with it as the context.
impl From<mer_flow::Error> for Error {
    fn from(error: mer_flow::Error) -> Self {
        Error::Flow {
            context: "optical flow".into(),
            error,
        }
    }
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error,
        }
    }
    pub(crate) fn image(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Image {
            path: path.into(),
            message: message.into(),
        }
    }
    pub(crate) fn cv(context: impl Into<String>) -> impl FnOnce(opencv::Error) -> Self {
        let context = context.into();
        move |error| Error::OpenCv { context, error }
    }
}
