//! Fused CPU kernels as candle custom ops, each with its own backward pass: convolution
//! (+ bias, + optional ReLU) as im2col + `gemm` per sample, training- and evaluation-mode
//! BatchNorm (+ optional ReLU), convolution + training-mode BatchNorm (+ ReLU) as one op
//! ([`conv_bn_relu`]), and max pool 2x2 (of a sum of two tensors, the residual join). They
//! keep candle tensors, `Var`s and the optimizer; only the arithmetic moves here.
//!
//! Work is split across the batch on the current rayon pool (one contiguous chunk of samples
//! per thread, scratch buffers allocated once per chunk); `gemm` itself runs single-threaded.
//! f32 and f64 (for gradient checks) are supported; callers fall back to plain candle ops
//! for other dtypes and devices ([`usable`]).

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Storage,
    Tensor, WithDType,
};
use rayon::prelude::*;

/// The body of every op's `cpu_fwd`: `$call` with the type alias `$t` bound to f32 or f64
/// by the dtype of the storage `$s`, else an error naming the op and the dtype found.
macro_rules! by_float {
    ($s:expr, $name:expr, $t:ident => $call:expr) => {
        match $s {
            CpuStorage::F32(_) => {
                type $t = f32;
                $call
            }
            CpuStorage::F64(_) => {
                type $t = f64;
                $call
            }
            other => bail!("{}: expected f32 or f64, found {:?}", $name, other.dtype()),
        }
    };
}

mod batchnorm;
mod conv;
mod fused;
mod maxpool;
mod pool;
#[cfg(test)]
mod testutil;

use batchnorm::*;
pub(crate) use batchnorm::{batch_norm, BnBatchStats};
pub(crate) use conv::conv2d;
use conv::*;
pub(crate) use fused::conv_bn_relu;
pub(crate) use maxpool::MaxPoolK;
pub(crate) use pool::max_pool2;

/// The float types of the fast kernels (f32, f64), with a branch-free ReLU gate: the
/// compiler turns a float `if` into a branch in these loops (mispredicted half the time on
/// activations), and a bit mask into vector code.
pub(crate) trait Lane: WithDType {
    /// `v` where `t > 0`, else `+0` (also for a NaN `t`, as `if t > 0 { v } else { 0 }`).
    fn gate(t: Self, v: Self) -> Self;
}

impl Lane for f32 {
    #[inline(always)]
    fn gate(t: f32, v: f32) -> f32 {
        f32::from_bits(v.to_bits() & (u32::from(t > 0.0)).wrapping_neg())
    }
}

impl Lane for f64 {
    #[inline(always)]
    fn gate(t: f64, v: f64) -> f64 {
        f64::from_bits(v.to_bits() & (u64::from(t > 0.0)).wrapping_neg())
    }
}

/// Whether the fast kernels handle `t` (CPU, f32 or f64).
pub(crate) fn usable(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// Whether the fast kernels are switched off (`MER_MODEL_PLAIN=1`: plain candle ops, for
/// comparisons). Read once.
pub(crate) fn disabled() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OFF.get_or_init(|| std::env::var("MER_MODEL_PLAIN").is_ok_and(|v| v == "1"))
        || PLAIN.with(|p| p.get())
}

thread_local! {
    static PLAIN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the fast kernels off on this thread (plain candle graphs), for comparisons.
pub fn with_plain_ops<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            PLAIN.with(|p| p.set(self.0));
        }
    }
    let _reset = Reset(PLAIN.with(|p| p.replace(true)));
    f()
}

/// Keeps freed tensor memory in the process instead of returning it to the kernel: a training
/// step frees and reallocates the same few dozen multi-megabyte buffers, and with glibc's
/// defaults each of them is a fresh `mmap` whose pages the kernel zeroes again (measured:
/// a large share of a step). Sets glibc's mmap threshold to 32 MiB (its maximum), a 256 MiB
/// top pad and no trimming, and no mmap at all for larger blocks (the baselines' dense
/// layers hold 205 MB weights and gradients, allocated and freed every step: each mmap'ed
/// afresh meant the kernel zeroing 205 MB, measured 80% system time with two MACNN cells in
/// parallel; from the heap they are reused), once per process; `MER_MODEL_KEEP_MALLOC=1`
/// leaves malloc alone. A no-op on other C libraries.
pub fn tune_allocator() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var("MER_MODEL_KEEP_MALLOC").is_ok_and(|v| v == "1") {
            return;
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator parameters; it is thread-safe in glibc.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            libc::mallopt(libc::M_TOP_PAD, 256 << 20);
            libc::mallopt(libc::M_MMAP_MAX, 0);
        }
    });
}

fn slice<'a, T: Lane>(s: &'a CpuStorage, l: &Layout, op: &'static str) -> Result<&'a [T]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or(candle_core::Error::RequiresContiguous { op })?;
    Ok(&T::cpu_storage_as_slice(s)?[a..b])
}

/// Runs `f` on the CPU slice of a tensor held by an op (not one of its arguments).
fn with_slice<T: Lane, R>(t: &Tensor, op: &'static str, f: impl FnOnce(&[T]) -> R) -> Result<R> {
    let (st, l) = t.storage_and_layout();
    match &*st {
        Storage::Cpu(cs) => Ok(f(slice::<T>(cs, l, op)?)),
        _ => bail!("{op}: expected a CPU tensor"),
    }
}

fn zero<T: Lane>() -> T {
    T::from_f64(0.0)
}

/// A buffer of `len` values that the caller overwrites entirely. Zeroed (sound and cheap
/// once freed memory is reused, see [`tune_allocator`]); one place to change should an
/// uninitialised-buffer API become worth it.
fn filled_later<T: Lane>(len: usize) -> Vec<T> {
    vec![zero::<T>(); len]
}

/// Number of chunks to split `n` samples into, and the chunk length: one chunk on one
/// thread, else about four per thread, so that work stealing evens out threads the OS
/// preempts (the machines are shared).
///
/// For work whose chunks are independent (a forward pass: each sample's output is its own),
/// so the result does not depend on the split.
fn chunks(n: usize) -> (usize, usize) {
    let nt = rayon::current_num_threads();
    split(n, if nt <= 1 { 1 } else { 4 * nt })
}

/// Chunks of a reduction over the samples (a weight gradient: one partial sum per chunk,
/// added in chunk order). Their number is fixed, whatever the thread count, so that the
/// sums are added in the same order and a training step gives the same bits on 1 thread and
/// on 64 (the runner's cells must not depend on how a machine shares its cores). Eight: what
/// [`chunks`] picks on two threads, the machines this project is measured on.
pub(crate) const REDUCTION_CHUNKS: usize = 8;

/// `(number of chunks, chunk length)` of a sum over `n` samples: see [`REDUCTION_CHUNKS`].
fn reduction_chunks(n: usize) -> (usize, usize) {
    split(n, REDUCTION_CHUNKS)
}

fn split(n: usize, want: usize) -> (usize, usize) {
    let len = n.div_ceil(want.clamp(1, n.max(1))).max(1);
    (n.div_ceil(len).max(1), len)
}

/// `dst (m x n) [+]= a (m x k) * b (k x n)`; every operand given with its (row, column)
/// strides in elements.
#[allow(clippy::too_many_arguments)]
fn mm<T: Lane>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    (d_rs, d_cs): (usize, usize),
    accumulate: bool,
    a: &[T],
    (a_rs, a_cs): (usize, usize),
    b: &[T],
    (b_rs, b_cs): (usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        dst.len() > (m - 1) * d_rs + (n - 1) * d_cs,
        "mm: destination too short"
    );
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                for c in 0..n {
                    dst[r * d_rs + c * d_cs] = zero();
                }
            }
        }
        return;
    }
    assert!(
        a.len() > (m - 1) * a_rs + (k - 1) * a_cs,
        "mm: left operand too short"
    );
    assert!(
        b.len() > (k - 1) * b_rs + (n - 1) * b_cs,
        "mm: right operand too short"
    );
    let one = T::from_f64(1.0);
    // SAFETY: the slices cover every element the strides reach (checked above), and `dst`
    // does not alias `a` or `b` (a `&mut` and two `&` slices).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            d_cs as isize,
            d_rs as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            one,
            one,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}
