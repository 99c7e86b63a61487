// Dual update (OpenCV forwardGradient + estimateDualVariables), as kernels.rs
// `forward_row` and `dual`: forward differences of u (zero past the last
// column and row), |grad u| as (float) hypot in double, then
// p = (p + taut * grad u) / (1 + taut * |grad u|).
#include "common.cuh"

TVL1_FN void tvl1_dual1(const float* u, float* pa, float* pb, int w, int h, int x, int y, long long idx, float taut)
{
    int i = y * w + x;
    float ux = x + 1 < w ? u[i + 1] - u[i] : 0.0f;
    float uy = y + 1 < h ? u[i + w] - u[i] : 0.0f;
    double dx = (double)ux, dy = (double)uy;
    float g = (float)sqrt(dx * dx + dy * dy);
    float ng = 1.0f + taut * g;
    pa[idx] = (pa[idx] + taut * ux) / ng;
    pb[idx] = (pb[idx] + taut * uy) / ng;
}

extern "C" __global__ void tvl1_dual(const float* u1, const float* u2, const float* u3,
                                     float* p11, float* p12, float* p21, float* p22, float* p31, float* p32,
                                     float taut, int use_gamma, const int* active, int w, int h, int batch)
{
    int idx = tvl1_thread();
    int n = w * h;
    if (idx >= n * batch) return;
    int b = idx / n, i = idx - b * n;
    if (!active[b]) return;
    int x = i % w, y = i / w;
    long long o = (long long)b * n;
    tvl1_dual1(u1 + o, p11, p12, w, h, x, y, idx, taut);
    tvl1_dual1(u2 + o, p21, p22, w, h, x, y, idx, taut);
    if (use_gamma) tvl1_dual1(u3 + o, p31, p32, w, h, x, y, idx, taut);
}
