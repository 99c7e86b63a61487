//! # mer-model: Off-TANet on candle
//!
//! Off-TANet (Optical-flow-feature Triplet Attention Net, PRICAI 2021) and the variants its
//! ablations need, on `candle-core` / `candle-nn`, exact to the released PyTorch weights:
//!
//! - [`OffTaNet`]: the network. [`ModelConfig`] picks the [`Variant`] of the last block
//!   (`res`, `cbam`, `sa`, `bot`, `ta`), the all-blocks-enhanced `all-ta`, and the number of
//!   input channels (3 for `[u, v, strain]`, 2 for the no-strain and raw-image ablations).
//! - Tensor names equal the reference state_dict keys: the reference `.pth` (a zip-format
//!   PyTorch pickle) loads as it is ([`OffTaNet::load`]); safetensors round-trip with the
//!   same names, BatchNorm statistics included ([`OffTaNet::save_safetensors`]).
//! - [`OffTaNet::forward_t`] in training mode (batch statistics, running-statistics update,
//!   dropout) or evaluation mode; [`OffTaNet::forward_with_taps`] also returns the attention
//!   weights and maps ([`Taps`]).
//! - [`Trainer`]: one step of cross-entropy and Adam (lr 1e-3, betas 0.9 / 0.999, eps 1e-8)
//!   or SGD with momentum and weight decay ([`SgdConfig`], Micro-Attention's), on any [`Net`].
//! - [`ModelSpec`] / [`Net`]: Off-TANet and the baselines behind one type.
//! - [`OffTaNet::summary`]: a torchstat-like table (output shapes, parameters, multiply-adds).
//! - [`baselines`]: the five published systems of the paper's Table 2 (Off-ApexNet, STSTNet,
//!   Dual-Inception, MACNN, Micro-Attention) as the reference code builds them, with its
//!   state_dict names ([`BaselineNet`], [`Baseline`]), the reference outputs' formula weights
//!   and torchstat's Params / Flops / MemR+W ([`TorchstatSummary`]).
//! - [`npy`]: `.npy` files as tensors (the workspace's reader and atomic writer).
//!
//! The crate depends on neither OpenCV nor the flow crate.
//!
//! ## Speed
//!
//! On the CPU (f32 and f64) the convolutions, BatchNorm (+ ReLU), conv + BatchNorm + ReLU in
//! training and the residual max pool run as fused custom candle ops with their own backward
//! passes (`kernels.rs`, `kernels/fused.rs`):
//! convolution as per-sample im2col + `gemm` (AVX-512 where the CPU has it), the input
//! gradient of a stride-1 convolution as a convolution with the flipped kernel, no input
//! gradient for the network input, samples split across the rayon pool. They are the
//! default path of [`OffTaNet::forward_t`] and [`Trainer::step`]; the tensors, `Var`s,
//! safetensors I/O and the optimizer stay candle's. Tests compare every op and every
//! variant's gradients with the plain candle graph, which [`with_plain_ops`] (or
//! `MER_MODEL_PLAIN=1`) selects. [`tune_allocator`] keeps freed buffers in the process.
//! `PERFORMANCE.md` has the measurements and profiles; `cargo xtask bench train` measures
//! ours against PyTorch.
//!
//! ## Example
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use mer_model::{ModelConfig, OffTaNet, Trainer, Variant, CLASS_NAMES};
//!
//! let dev = Device::Cpu;
//! let cfg = ModelConfig::new(Variant::Ta);
//! let model = OffTaNet::random(&cfg, &dev)?;
//! assert_eq!(model.num_params(), 59_403);
//!
//! let x = Tensor::randn(0f32, 1.0, (2, 3, 112, 112), &dev)?;
//! let logits = model.forward_t(&x, false)?;
//! assert_eq!(logits.dims(), &[2, 3]);
//! let probs = candle_nn::ops::softmax(&logits, 1)?.to_vec2::<f32>()?;
//! let best = probs[0].iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
//! println!("sample 0: {}", CLASS_NAMES[best]);
//!
//! let mut trainer = Trainer::new(model)?;
//! let loss = trainer.step(&x, &Tensor::new(&[0u32, 2], &dev)?)?;
//! assert!(loss.is_finite());
//! # Ok::<(), mer_model::Error>(())
//! ```
//!
//! ## Reference files
//!
//! Tests compare with the reference implementation's outputs under `../shared/reference`
//! relative to the workspace root ([`reference_dir`], overridable with `MER_REFERENCE_DIR`).
//! When the files are absent those tests print why and pass, except with `CI=true`, where
//! they fail.

mod attention;
pub mod baselines;
mod blocks;
mod config;
mod error;
mod kernels;
mod layers;
mod net;
pub mod npy;
mod optim;
mod state;
mod summary;
mod train;
mod zoo;

/// The candle crates this one is built on, re-exported so that users name the same versions.
pub use {candle_core, candle_nn};

pub use attention::{
    head_widths, positional_code, ChannelAttention, MultiHeadSelfAttention, SelfAttentionHead,
    SpatialAttention,
};
pub use baselines::{Baseline, BaselineNet, TorchstatSummary};
pub use blocks::{Block, BotBlock, EnhancedBlock, Residual};
pub use config::{ModelConfig, Variant, CLASS_NAMES, INPUT_SIZE};
pub use error::{Error, Result};
pub use kernels::{tune_allocator, with_plain_ops};
pub use layers::{
    max_keepdim_first, max_pool2, relu, BatchNorm2d, Conv2d, Linear, BN_EPS, BN_MOMENTUM,
};
pub use net::{OffTaNet, Taps};
pub use summary::{Summary, SummaryRow};
pub use train::{AdamConfig, OptimizerConfig, SgdConfig, Trainer};
pub use zoo::{ModelSpec, Net};

/// The directory of the reference data: `$MER_REFERENCE_DIR`, else `../shared/reference`
/// relative to the workspace root.
pub fn reference_dir() -> std::path::PathBuf {
    match std::env::var_os("MER_REFERENCE_DIR") {
        Some(d) if !d.is_empty() => d.into(),
        _ => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference"),
    }
}

/// For tests: the reference directory if it holds `file`; otherwise prints why the test is
/// skipped and returns `None`, or panics when `CI=true` (absence must fail in CI).
#[cfg(test)]
pub(crate) fn reference_or_skip(test: &str, file: &str) -> Option<std::path::PathBuf> {
    let dir = reference_dir();
    if dir.join(file).exists() {
        return Some(dir);
    }
    let msg = format!(
        "{test}: reference file {} not found",
        dir.join(file).display()
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg} (CI=true: reference files are required)");
    }
    eprintln!("skipping {msg} (set MER_REFERENCE_DIR)");
    None
}

/// For tests: the largest absolute entry of `t`, in f64.
#[cfg(test)]
pub(crate) fn abs_max(t: &candle_core::Tensor) -> f64 {
    t.to_dtype(candle_core::DType::F64)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

#[cfg(test)]
mod tests {
    /// Architecture invariant: the model crate depends on neither OpenCV nor the flow or data
    /// crates, so that other crates can import it alone.
    #[test]
    fn depends_on_neither_opencv_nor_flow() {
        let manifest = include_str!("../Cargo.toml");
        let deps = manifest
            .split("[dependencies]")
            .nth(1)
            .unwrap()
            .split("\n[")
            .next()
            .unwrap();
        for banned in ["opencv", "mer-flow", "mer-data", "mer-eval"] {
            assert!(
                !deps.contains(banned),
                "mer-model must not depend on {banned}"
            );
        }
    }
}
