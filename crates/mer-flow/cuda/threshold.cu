// Thresholding (OpenCV estimateV): v = u + TH(rho(u)), as kernels.rs
// `threshold` and the first part of its half-step A. With use_gamma != 0 the
// illumination term u3 takes part (u3/v3 are then read/written).
#include "common.cuh"

extern "C" __global__ void tvl1_threshold(const float* i1wx, const float* i1wy, const float* grad, const float* rho_c,
                                          const float* u1, const float* u2, const float* u3,
                                          float* v1, float* v2, float* v3,
                                          float l_t, float gamma, int use_gamma,
                                          const int* active, int n, int batch)
{
    int idx = tvl1_thread();
    if (idx >= n * batch) return;
    if (!active[idx / n]) return;
    float o1 = u1[idx], o2 = u2[idx];
    float ix = i1wx[idx], iy = i1wy[idx], g = grad[idx];
    float rho = rho_c[idx] + (ix * o1 + iy * o2);
    float o3 = 0.0f;
    if (use_gamma) {
        o3 = u3[idx];
        rho = rho + gamma * o3;
    }
    float lg = l_t * g;
    float fi = -rho / g;
    float t1, t2, kk;
    if (rho < -l_t * g) {
        t1 = l_t * ix; t2 = l_t * iy; kk = l_t;
    } else if (rho > lg) {
        t1 = -l_t * ix; t2 = -l_t * iy; kk = -l_t;
    } else if (g > TVL1_FLT_EPSILON) {
        t1 = fi * ix; t2 = fi * iy; kk = fi;
    } else {
        t1 = 0.0f; t2 = 0.0f; kk = 0.0f;
    }
    v1[idx] = o1 + t1;
    v2[idx] = o2 + t2;
    if (use_gamma) v3[idx] = o3 + kk * gamma;
}
