//! # mer-flow: Dual TV-L1 optical flow, exact to OpenCV, and optical strain
//!
//! A light, dependency-free (but for `rayon` and `thiserror`) port of OpenCV's
//! CPU `DualTVL1OpticalFlow` (Zach, Pock, Bischof 2007; Sánchez Pérez et al.,
//! IPOL 2013) with the same parameters, defaults and stopping rule, computed
//! operation for operation in OpenCV's f32 order so that its flows match
//! OpenCV's, and vectorised so that it is several times faster.
//!
//! - [`TvL1`] / [`TvL1Params`]: the solver (`Default` = OpenCV's defaults);
//!   [`TvL1::compute_batch`] runs many pairs on all cores, and large frames
//!   spread one pair over the rayon pool.
//! - [`strain`]: optical strain magnitude (the paper's eq. (4), or the
//!   reference code's variant).
//! - [`io`]: Middlebury `.flo` read/write and `.npy` write.
//!
//! Architecture invariant: this crate depends on neither OpenCV nor candle,
//! so other crates can import it alone. OpenCV is only a dev-dependency, the
//! reference peer of the parity tests and benchmarks.
//!
//! ```
//! use mer_flow::{strain::{optical_strain, StrainFormula}, GrayImage, TvL1, TvL1Params};
//! let (w, h) = (48, 40);
//! // A smooth pattern and the same pattern moved 1 px to the right.
//! let pattern = |shift: f32| {
//!     let px = (0..w * h).map(|i| {
//!         let (x, y) = ((i % w) as f32 - shift, (i / w) as f32);
//!         (128.0 + 50.0 * (x * 0.35).sin() + 40.0 * (y * 0.3).cos()).round()
//!     });
//!     GrayImage::new(w, h, px.collect()).unwrap()
//! };
//! let tvl1 = TvL1::new(TvL1Params::default())?;
//! let flow = tvl1.compute(&pattern(0.0), &pattern(1.0))?;
//! let (u, v) = flow.get(24, 20);
//! assert!((u - 1.0).abs() < 0.15 && v.abs() < 0.15, "({u}, {v})");
//! let strain = optical_strain(&flow, StrainFormula::Paper);
//! assert_eq!(strain.len(), w * h);
//! # Ok::<(), mer_flow::Error>(())
//! ```

mod cpu;
pub mod cuda;
mod device;
mod error;
mod image;
pub mod io;
mod kernels;
mod median;
mod remap;
mod resize;
pub mod strain;
#[doc(hidden)]
pub mod testing;
mod tvl1;

pub use device::Device;
pub use error::{Error, Result};
pub use image::{Flow, GrayImage};
pub use tvl1::{TvL1, TvL1Params, Workspace};
