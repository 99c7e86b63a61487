// A minimal CUDA-to-C++ shim for mer-flow's kernels: the execution-space
// qualifiers vanish and the built-in index variables become thread-local
// globals that the launcher (shim.cpp) sets while it runs the grid
// sequentially, block by block and thread by thread. Only what the kernels
// use is defined: they have no shared memory, barriers or atomics.
#pragma once
#include <math.h>

struct mer_dim3 {
    unsigned x, y, z;
};

extern thread_local mer_dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
