//! # mer-data: from a folder of face images to a tensor of flow features
//!
//! The dataset side of the Off-TANet toolkit:
//!
//! - [`index`]: indexers of the databases' native releases (CASME `.xls`, CASME II
//!   `CASME2-coding-*.xlsx`, CAS(ME)^2 `CAS(ME)^2code_final.xlsx` with its three
//!   header-less sheets) and of the reference's combined layout (`casme1_cropped/`,
//!   `casme2_cropped/`, `casme^2_cropped/` + a list CSV), read with calamine. Rows become
//!   3-class samples (negative, positive, surprise) by the rules of `dataset-formats.md`;
//!   every onset and apex frame is checked on disk; unusable rows are dropped with a reason.
//! - [`megc`]: indexers of SAMM (its FACS-codes workbook) and SMIC-HS (the original
//!   release, labels from its folders) with MEGC 2019's 3-class rules.
//! - [`list`]: the reference's `Dataset,Subject,Sample,Onset,Apex,Class` CSV, counts, and
//!   sample-by-sample comparison of two lists.
//! - [`synth`]: a deterministic synthetic micro-expression database written in the three
//!   native layouts (procedural faces, FACS-like local motions of 0.3 to 3 px at 112x112,
//!   nuisance motion, lighting, noise and blinks), the default data of the experiments.
//! - [`workbook`]: minimal `.xlsx` and BIFF8 `.xls` writers (calamine only reads).
//! - [`preprocess`]: frames through OpenCV exactly as the reference (colour read, bicubic
//!   resize to 112x112, then BGR2GRAY), and an optional Haar-cascade face crop.
//! - [`features`]: onset->apex TV-L1 flow and optical strain (the `mer-flow` crate) as the
//!   [`features::InputKind`]s the experiments need, in a checked, resumable safetensors cache.
//!
//! Command line: `cargo xtask index --root DIR --out LIST.csv [--compare OTHER.csv]`,
//! `cargo xtask synth --out DIR [--subjects N] [--seed S]`,
//! `cargo xtask features --root DIR --list LIST.csv --out CACHE`.
//!
//! Architecture invariant: this crate knows nothing of the model or of training; it hands
//! out sample lists and `[N, C, 112, 112]` f32 buffers.
//!
//! ```
//! use mer_data::features::{load_features, FeatureConfig, InputKind};
//! use mer_data::index::{index_root, IndexOptions};
//! use mer_data::list::read_list;
//! use mer_data::synth::{synthesize, SynthConfig, SYNTH_LIST};
//!
//! let dir = tempfile::tempdir()?;
//! let root = dir.path().join("synthetic");
//! // A tiny synthetic database: 3 subjects (one per database), 2 samples each.
//! let cfg = SynthConfig { subjects: 3, samples_per_subject: 2, frames: 3, size: 96, ..SynthConfig::default() };
//! synthesize(&root, &cfg)?;
//! // The indexer reads it as it reads real data, and finds exactly the generated samples.
//! let index = index_root(&root, &IndexOptions::default())?;
//! let list = root.join(SYNTH_LIST);
//! assert_eq!(index.list(), read_list(&list)?);
//! // Flow features [N, 3, 112, 112] (u, v, strain), cached under `cache/`.
//! let cache = dir.path().join("cache");
//! let (samples, x) = load_features(&root, &list, &cache, InputKind::Flow3, &FeatureConfig::default())?;
//! assert_eq!(x.len(), samples.len() * 3 * 112 * 112);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod clip;
mod error;
pub mod features;
pub mod index;
pub mod list;
pub mod megc;
pub mod preprocess;
mod sheet;
pub mod spot;
pub mod synth;
#[cfg(test)]
mod testutil;
pub mod workbook;

pub use error::{Error, Result};

pub use features::{load_features, synthetic_features, FeatureCache, FeatureConfig, InputKind};
pub use index::{index_root, Index, IndexOptions, IndexedSample};
pub use list::{Class, Dataset, Dropped, SampleMeta};
pub use synth::{ensure_default_synth, ensure_synth, synthesize, SynthConfig};
