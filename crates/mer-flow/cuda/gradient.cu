// Gradients of I1: OpenCV's centeredGradient (central differences, one-sided
// at the border, times 0.5), as tvl1.rs `centered_gradient`.
// (The forward gradient of the flow is part of the dual update, dual.cu.)
#include "common.cuh"

extern "C" __global__ void tvl1_centered_gradient(const float* src, float* dx, float* dy, int w, int h, int batch)
{
    int idx = tvl1_thread();
    int n = w * h;
    if (idx >= n * batch) return;
    int b = idx / n, i = idx - b * n;
    int x = i % w, y = i / w;
    const float* s = src + (long long)b * n;
    float gx, gy;
    if (x == 0) gx = s[y * w + 1] - s[y * w];
    else if (x == w - 1) gx = s[y * w + x] - s[y * w + x - 1];
    else gx = s[y * w + x + 1] - s[y * w + x - 1];
    if (y == 0) gy = s[w + x] - s[x];
    else if (y == h - 1) gy = s[y * w + x] - s[(y - 1) * w + x];
    else gy = s[(y + 1) * w + x] - s[(y - 1) * w + x];
    dx[idx] = 0.5f * gx;
    dy[idx] = 0.5f * gy;
}
