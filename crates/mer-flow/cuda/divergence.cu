// Divergence of the dual variables (OpenCV divergence: backward differences,
// p taken as zero outside) and the primal update (OpenCV estimateU):
// u = v + theta * div p, with the squared update per pixel into `du` (summed
// by reduce.cu for the stopping rule). As kernels.rs `divergence_row` and
// the rest of half-step A; the pair (pa, pb) is (p_k1, p_k2) of component k.
#include "common.cuh"

TVL1_FN float tvl1_div(const float* pa, const float* pb, int w, int x, int y)
{
    int i = y * w + x;
    if (y == 0) {
        if (x == 0) return pa[i] + pb[i];
        return pa[i] - pa[i - 1] + pb[i];
    }
    if (x == 0) return pa[i] + pb[i] - pb[i - w];
    return (pa[i] - pa[i - 1]) + (pb[i] - pb[i - w]);
}

extern "C" __global__ void tvl1_divergence(const float* p11, const float* p12, const float* p21, const float* p22,
                                           const float* p31, const float* p32,
                                           const float* v1, const float* v2, const float* v3,
                                           float* u1, float* u2, float* u3, float* du,
                                           float theta, int use_gamma,
                                           const int* active, int w, int h, int batch)
{
    int idx = tvl1_thread();
    int n = w * h;
    if (idx >= n * batch) return;
    int b = idx / n, i = idx - b * n;
    if (!active[b]) return;
    int x = i % w, y = i / w;
    long long o = (long long)b * n;
    float d1 = tvl1_div(p11 + o, p12 + o, w, x, y);
    float d2 = tvl1_div(p21 + o, p22 + o, w, x, y);
    float o1 = u1[idx], o2 = u2[idx];
    float n1 = v1[idx] + theta * d1;
    float n2 = v2[idx] + theta * d2;
    u1[idx] = n1;
    u2[idx] = n2;
    float e = (n1 - o1) * (n1 - o1) + (n2 - o2) * (n2 - o2);
    if (use_gamma) {
        float d3 = tvl1_div(p31 + o, p32 + o, w, x, y);
        float o3 = u3[idx];
        float n3 = v3[idx] + theta * d3;
        u3[idx] = n3;
        e = e + (n3 - o3) * (n3 - o3);
    }
    du[idx] = e;
}
