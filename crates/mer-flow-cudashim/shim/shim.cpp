// Host shim: mer-flow's CUDA kernels compiled as C++ and a launcher that runs a
// 1-D grid sequentially. `mer_shim_launch` takes its arguments as
// cuLaunchKernel does: an array of pointers to the argument values.
#include "cuda_shim.h"

#include <cstring>
#include <type_traits>
#include <utility>

thread_local mer_dim3 threadIdx, blockIdx, blockDim, gridDim;

#include "../../mer-flow/cuda/resize.cu"
#include "../../mer-flow/cuda/gradient.cu"
#include "../../mer-flow/cuda/warp.cu"
#include "../../mer-flow/cuda/threshold.cu"
#include "../../mer-flow/cuda/divergence.cu"
#include "../../mer-flow/cuda/dual.cu"
#include "../../mer-flow/cuda/median.cu"
#include "../../mer-flow/cuda/reduce.cu"

template <typename... A, size_t... I>
static void run_grid(void (*kernel)(A...), unsigned grid, unsigned block, void** args, std::index_sequence<I...>)
{
    gridDim = mer_dim3{grid, 1, 1};
    blockDim = mer_dim3{block, 1, 1};
    for (unsigned b = 0; b < grid; ++b) {
        blockIdx = mer_dim3{b, 0, 0};
        for (unsigned t = 0; t < block; ++t) {
            threadIdx = mer_dim3{t, 0, 0};
            kernel(*static_cast<std::remove_cv_t<A>*>(args[I])...);
        }
    }
}

template <typename... A>
static void run(void (*kernel)(A...), unsigned grid, unsigned block, void** args)
{
    run_grid(kernel, grid, block, args, std::index_sequence_for<A...>{});
}

// Runs kernel `name` on `grid` blocks of `block` threads; returns -1 for an unknown name.
extern "C" int mer_shim_launch(const char* name, unsigned grid, unsigned block, void** args)
{
#define MER_KERNEL(f)                        \
    if (std::strcmp(name, #f) == 0) {        \
        run(f, grid, block, args);           \
        return 0;                            \
    }
    MER_KERNEL(tvl1_resize)
    MER_KERNEL(tvl1_centered_gradient)
    MER_KERNEL(tvl1_warp)
    MER_KERNEL(tvl1_threshold)
    MER_KERNEL(tvl1_divergence)
    MER_KERNEL(tvl1_dual)
    MER_KERNEL(tvl1_median)
    MER_KERNEL(tvl1_error_partial)
    MER_KERNEL(tvl1_error_decide)
#undef MER_KERNEL
    return -1;
}
