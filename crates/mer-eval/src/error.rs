//! The crate's error type.

use std::path::{Path, PathBuf};

/// Everything that can go wrong between features and a report.
///
/// Errors about files name the file; errors about data name the row, fold or sample.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A JSON file could not be parsed or written.
    #[error("{}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// A file or folder could not be read or written (also through the shared helpers:
    /// atomic writes, `.npy`); the path is in the message.
    #[error(transparent)]
    File(#[from] mer_common::Error),
    /// Training or saving one fold failed.
    #[error("experiment {experiment} fold {fold} ({subject}): {source}")]
    Fold {
        /// The experiment's name.
        experiment: String,
        /// The fold's number (1-based).
        fold: usize,
        /// The left-out subject.
        subject: String,
        /// What went wrong.
        source: Box<Error>,
    },
    /// The PyTorch peer of a benchmark misbehaved.
    #[error("PyTorch peer: {0}")]
    Peer(String),
    /// A thread pool could not be built.
    #[error("thread pool: {0}")]
    ThreadPool(#[from] rayon::ThreadPoolBuildError),
    /// A run folder lacks what the command needs (a fold's model, an observation epoch).
    #[error("{0}")]
    Incomplete(String),
    /// The model has no attention maps to analyse.
    #[error("{0}")]
    NoAttention(String),
    /// Too few subjects for leave-one-subject-out.
    #[error("{}: {samples} samples of {subjects} subject(s); LOSO needs at least 2 subjects", root.display())]
    TooFewSubjects {
        /// The data root.
        root: PathBuf,
        /// Samples found.
        samples: usize,
        /// Subjects found.
        subjects: usize,
    },
    /// An experiments file is malformed or inconsistent.
    #[error("experiments file {}: {message}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A predictions CSV is malformed.
    #[error("{}, line {line}: {message}", path.display())]
    Csv {
        /// The CSV file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The data crate failed (indexing, synthetic database, features).
    #[error(transparent)]
    Data(#[from] mer_data::Error),
    /// The model crate failed (building, training, weights).
    #[error(transparent)]
    Model(#[from] mer_model::Error),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] mer_model::candle_core::Error),
    /// A plot could not be drawn or written.
    #[error("plot {}: {message}", path.display())]
    Plot {
        /// The PNG file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A run folder does not match the requested run (another data list or schedule).
    #[error("run folder {}: {message}", path.display())]
    RunMismatch {
        /// The run folder.
        path: PathBuf,
        /// What differs.
        message: String,
    },
    /// An argument is out of range or inconsistent.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The run was asked to stop early (`stop_after_cells`); finished cells are kept.
    #[error("stopped after {0} newly finished cells as asked; rerun to resume")]
    Stopped(usize),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::File(mer_common::Error::io(path.as_ref(), source))
    }
    pub(crate) fn json(path: impl AsRef<Path>, source: serde_json::Error) -> Self {
        Error::Json {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
    pub(crate) fn plot(path: impl AsRef<Path>, message: impl ToString) -> Self {
        Error::Plot {
            path: path.as_ref().to_path_buf(),
            message: message.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_fold_error_keeps_its_cause_and_names_the_fold() {
        let io = Error::io(
            "folds/ta/03.json",
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied"),
        );
        let e = Error::Fold {
            experiment: "ta".into(),
            fold: 3,
            subject: "casme2/sub01".into(),
            source: Box::new(io),
        };
        assert_eq!(
            e.to_string(),
            "experiment ta fold 3 (casme2/sub01): folds/ta/03.json: denied"
        );
        let cause = e.source().expect("the fold's error is its source");
        assert_eq!(cause.to_string(), "folds/ta/03.json: denied");
        // The cause is the fold's typed error (boxed), not text.
        assert!(matches!(
            cause.downcast_ref::<Box<Error>>().map(|b| &**b),
            Some(Error::File(mer_common::Error::Io { .. }))
        ));
    }
}
