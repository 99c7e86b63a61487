//! The hand-written CUDA path of Dual TV-L1.
//!
//! The kernels are CUDA C++ source in `crates/mer-flow/cuda/*.cu`, one per step
//! of the algorithm (pyramid resize, centered gradient, bicubic warp,
//! thresholding, divergence + primal update, dual update, median filter, error
//! reduction), embedded in the crate and compiled at run time with NVRTC
//! (`--fmad=false`, IEEE division and square root, no fast math). They compute
//! every pixel with the CPU path's f32 operations in the CPU path's order, so
//! the GPU flow follows the CPU flow (and OpenCV's) to within rounding.
//!
//! The algorithm is driven from the host by [`GpuTvL1`], generic over a
//! [`Backend`] that allocates buffers and launches kernels: with the `cuda`
//! feature, `CudaBackend` does it through `cudarc` (driver API + NVRTC, both
//! loaded dynamically, so building needs no CUDA toolkit and a binary without
//! a GPU fails only when the GPU path is asked for, with [`crate::Error::Gpu`]); the
//! tests drive the same host code with a CPU shim that compiles the same `.cu`
//! files as C++ and runs their grids sequentially
//! (`crates/mer-flow-cudashim`).
//!
//! **Batching.** Pairs of one size are processed as a batch: every kernel
//! launch covers all pairs of the batch (one thread per pixel of every pair),
//! so that hundreds of 112x112 pairs keep a GPU busy. Each pair keeps its own
//! stopping rule through a per-pair `active` flag on the device: all pairs of
//! a batch walk the same (scale, warp, outer, inner) loop in lockstep, and a
//! pair whose error has met epsilon is skipped by the iteration kernels until
//! the next warp, which is exactly the CPU loop per pair. The host reads the
//! flags back every few iterations to stop early when every pair has stopped.
//!
//! **The stopping decision** is taken as on the CPU path: a double sum of the
//! squared updates, and the exact row-order f32 sum only when the double sum is
//! within the f32 sum's worst-case rounding of the threshold. The GPU therefore
//! makes OpenCV's decision; in practice the GPU and CPU flows are equal up to
//! the rounding of the very few operations where NVRTC and the host compiler
//! may differ. The documented tolerance is 1e-3 px mean end-point error.
//!
//! # Running the GPU checks on a machine with a GPU
//!
//! On a Linux machine with an NVIDIA driver (`libcuda.so.1`) and NVRTC 12
//! (a CUDA toolkit, or `pip install nvidia-cuda-nvrtc-cu12` and its
//! `<site-packages>/nvidia/cuda_nvrtc/lib` on `LD_LIBRARY_PATH`, or the full
//! path of `libnvrtc.so.12` in `MER_FLOW_NVRTC`):
//!
//! ```sh
//! pip install nvidia-cuda-nvrtc-cu12   # unless a CUDA toolkit provides libnvrtc.so.12
//! export LD_LIBRARY_PATH="$(python3 -c 'import nvidia.cuda_nvrtc as m; print(list(m.__path__)[0])')/lib:${LD_LIBRARY_PATH:-}"
//! CI=true cargo test -p mer-flow --features cuda --test cuda_nvrtc --test cuda_gpu -- --nocapture
//! cargo bench -p mer-flow --features cuda --bench cuda
//! ```
//!
//! `cuda_gpu` compares CUDA and CPU flows (per step and end to end) and prints
//! why it skips when no GPU is present; with `MER_FLOW_REQUIRE_GPU=1` a missing
//! GPU is a failure. The bench reports pairs per second of batched 112x112
//! pairs, GPU beside the CPU's `compute_batch`.

mod driver;
#[cfg(feature = "cuda")]
mod nvrtc;

pub use driver::{Arg, Backend, GpuTvL1, Kernel};
#[cfg(feature = "cuda")]
pub use nvrtc::{compile_ptx, load_nvrtc, nvrtc_available, CudaBackend, CudaTvL1};

/// The kernel source files (`cuda/*.cu` and their shared header), name and text.
pub const SOURCES: &[(&str, &str)] = &[
    ("common.cuh", include_str!("../../cuda/common.cuh")),
    ("resize.cu", include_str!("../../cuda/resize.cu")),
    ("gradient.cu", include_str!("../../cuda/gradient.cu")),
    ("warp.cu", include_str!("../../cuda/warp.cu")),
    ("threshold.cu", include_str!("../../cuda/threshold.cu")),
    ("divergence.cu", include_str!("../../cuda/divergence.cu")),
    ("dual.cu", include_str!("../../cuda/dual.cu")),
    ("median.cu", include_str!("../../cuda/median.cu")),
    ("reduce.cu", include_str!("../../cuda/reduce.cu")),
];

/// One `.cu` file as a self-contained program: its `#include "common.cuh"`
/// replaced by the header's text (NVRTC then needs no include path).
pub fn file_source(name: &str) -> Option<String> {
    let (_, text) = SOURCES.iter().find(|(n, _)| *n == name)?;
    let common = SOURCES[0].1;
    Some(
        text.lines()
            .map(|l| {
                if l.trim() == "#include \"common.cuh\"" {
                    common
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// All kernels as one program (the header once, then every `.cu` file).
pub fn program_source() -> String {
    let mut s = String::from(SOURCES[0].1);
    for (_, text) in &SOURCES[1..] {
        s.push('\n');
        for l in text
            .lines()
            .filter(|l| l.trim() != "#include \"common.cuh\"")
        {
            s.push_str(l);
            s.push('\n');
        }
    }
    s
}
