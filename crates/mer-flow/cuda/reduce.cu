// Error reduction and the stopping decision of the inner loop.
//
// OpenCV stops when its f32 sum of the squared updates, taken sequentially in
// row order, is at most epsilon^2 * W * H. Stage 1 sums each pair's `du` in
// double, one block per pair (grid = batch blocks), each thread a strided part
// (no shared memory, no barrier). Stage 2, one thread per pair, adds the
// partial sums and decides as kernels.rs `decide`: when the double sum is
// farther from the threshold than the sequential f32 sum's worst-case
// rounding error, the decision is certain; otherwise the exact row-order f32
// sum is taken (one thread, rare). The decision is therefore OpenCV's.
#include "common.cuh"

extern "C" __global__ void tvl1_error_partial(const float* du, double* partial, const int* active, int n, int batch)
{
    int b = (int)blockIdx.x;
    if (b >= batch || !active[b]) return;
    const float* d = du + (long long)b * n;
    double s = 0.0;
    for (int i = (int)threadIdx.x; i < n; i += (int)blockDim.x) s += (double)d[i];
    partial[(long long)b * blockDim.x + threadIdx.x] = s;
}

// `parts` = the block size of stage 1. `error[b]` receives a value on the same
// side of `scaled_eps` as OpenCV's error; `active[b]` becomes 0 when it stops.
extern "C" __global__ void tvl1_error_decide(const double* partial, int parts, const float* du, float* error, int* active,
                                             float scaled_eps, int n, int batch)
{
    int b = tvl1_thread();
    if (b >= batch || !active[b]) return;
    double s = 0.0;
    for (int k = 0; k < parts; ++k) s += partial[(long long)b * parts + k];
    double u = (double)TVL1_FLT_EPSILON / 2.0;
    double bound = 2.0 * (double)n * u * s + 1e-30;
    double eps = (double)scaled_eps;
    float e;
    int go_on;
    if (s > eps + bound) {
        e = (float)s;
        go_on = 1;
    } else if (s + bound < eps) {
        e = (float)s;
        go_on = 0;
    } else {
        const float* d = du + (long long)b * n;
        e = 0.0f;
        for (int i = 0; i < n; ++i) e += d[i];
        go_on = e > scaled_eps;
    }
    error[b] = e;
    if (!go_on) active[b] = 0;
}
