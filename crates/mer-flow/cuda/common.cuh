// Shared helpers of the TV-L1 kernels.
//
// Every .cu file of this folder is compiled twice: by NVRTC as CUDA (the GPU
// path, `--fmad=false`, IEEE division and square root, no fast math), and as
// plain C++ by the host shim of the tests (crates/mer-flow-cudashim), which
// defines __global__, threadIdx, ... and runs the grid sequentially. So the
// kernels use no shared memory, no barriers, no atomics and no CUDA-only
// intrinsics: only float/double arithmetic, rintf, floorf and sqrt.
//
// Layout: a batch of `batch` pairs of one size W x H; every per-pair plane is
// stored pair after pair (pair b's plane starts at b * W * H). Kernels are
// launched on a 1-D grid with at least batch * W * H threads (one per pixel of
// every pair) unless stated otherwise. `active[b] == 0` marks a pair whose
// iteration has met the stopping rule: the iteration kernels leave it alone.
#ifndef MER_TVL1_COMMON_CUH
#define MER_TVL1_COMMON_CUH

#define TVL1_FN static __device__ __forceinline__

// FLT_EPSILON (NVRTC has no <cfloat>).
#define TVL1_FLT_EPSILON 1.1920928955078125e-07f

// Global thread index on a 1-D grid.
TVL1_FN int tvl1_thread() { return (int)(blockIdx.x * blockDim.x + threadIdx.x); }

TVL1_FN int tvl1_clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

#endif
