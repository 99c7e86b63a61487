//! # mer-eval: metrics, LOSO training and the paper's experiments
//!
//! The evaluation side of the Off-TANet toolkit, behind `cargo xtask ablation`,
//! `cargo xtask metrics` and `cargo xtask attention`:
//!
//! - [`metrics`]: UAR and UF1 (the paper's eq. 11 and 12) with scikit-learn's macro
//!   averaging over the classes present, confusion matrices, per-class recall and F1, pooled
//!   and per-fold-mean combination of folds, the `fold,truth,pred` predictions CSV.
//! - [`loso`]: leave-one-subject-out folds, one per (database, subject).
//! - [`config`]: experiments as data (`experiments/paper.toml`): model variants, inputs,
//!   schedules and the report's tables.
//! - [`train`]: one fold's training (seeded initialisation, Adam with step decay, reshuffled
//!   mini-batches) with test evaluations at the observation epochs.
//! - [`protocol`]: the "honest" protocol (pooled at a fixed epoch, the headline) and the
//!   "paper" protocol (per-fold mean at the best observation epoch, chosen on the test folds).
//! - [`run_dir`]: the run folder: its settings (created once, checked by every invocation),
//!   one file per finished cell (experiment x seed x fold), one record per invocation.
//! - [`ensemble`]: a finished run's models (its final model, or its fold models as an
//!   ensemble) for prediction on new clips.
//! - [`plan`]: the grid's cells, their static costs, shards (`--shard I/N`, Slurm arrays,
//!   Kubernetes indexed jobs).
//! - [`runner`]: the whole experiment run in steps (prepare, plan, train, report), cells in
//!   parallel, resumable, progress through a callback.
//! - [`report`], [`stats`], [`plot`], [`attention`]: `REPORT.md` from the cells on disk,
//!   `summary.csv`, means and spreads over seeds, bootstrap intervals over subjects and
//!   paired differences, Fig. 4 and 5 as PNG, learning curves, Table 5 (sparseness of the
//!   attention maps), the manifest.
//!
//! ## Example
//!
//! UAR and UF1 of a small set of predictions over two folds (class indices: negative 0,
//! positive 1, surprise 2):
//!
//! ```
//! use mer_eval::metrics::{evaluate_folds, scores, FoldLabel, FoldPredictions};
//!
//! // One fold: a class predicted that is absent from the truth still counts (recall 0).
//! let s = scores(&[0, 0, 1, 1, 1], &[0, 2, 1, 1, 0]);
//! assert!((s.uar - 0.388_888_888_888_888_84).abs() < 1e-12); // scikit-learn's value
//! assert!((s.uf1 - 0.433_333_333_333_333_35).abs() < 1e-12);
//!
//! // Two folds, pooled (MEGC) and per-fold mean (the paper's combination).
//! let folds = vec![
//!     FoldPredictions { fold: FoldLabel::Index(1), truth: vec![0, 0, 1, 1, 1], pred: vec![0, 2, 1, 1, 0] },
//!     FoldPredictions { fold: FoldLabel::Index(2), truth: vec![2, 2], pred: vec![2, 2] },
//! ];
//! let m = evaluate_folds(&folds, 3);
//! assert_eq!(m.folds[1].uar, 1.0);
//! assert!((m.per_fold_mean.uar - (0.388_888_888_888_888_84 + 1.0) / 2.0).abs() < 1e-12);
//! println!("pooled UAR {:.4}, UF1 {:.4}", m.pooled.uar, m.pooled.uf1);
//! ```
//!
//! Architecture invariant: this crate uses the data crate for samples and features and the
//! model crate for networks; it holds no command-line code (the `xtask` commands are glue).

pub mod attention;
pub mod bench;
pub mod config;
pub mod ensemble;
mod error;
pub mod io;
pub mod loso;
pub mod metrics;
pub mod plan;
pub mod plot;
pub mod protocol;
pub mod report;
pub mod run_dir;
pub mod runner;
pub mod stats;
pub mod train;

pub use error::{Error, Result};
pub use metrics::{evaluate_folds, scores, Confusion, MetricsReport, Scores, UarUf1};
pub use plan::Shard;
pub use report::{report_run, ReportOutcome};
pub use runner::{
    run_ablation, AblationOptions, DataSource, Parallelism, Progress, ProgressEvent, Provenance,
    RunOutcome,
};
