// Bicubic warp of I1 and its gradients by the current flow, then |grad I1w|^2
// and the constant part of rho (OpenCV buildFlowMap + remap(INTER_CUBIC,
// BORDER_CONSTANT 0) + calcGradRho), as remap.rs: map coordinates quantised
// to 1/32 px (round half to even), the 4x4 weights from OpenCV's float table
// (`table`: 32 * 32 entries of 16 floats, uploaded from the CPU path's own
// table), taps outside the image count as zero. Interior taps sum row by row
// ((t0 + t1) + t2) + t3, then the four rows in order; border taps one by one
// from zero, exactly as OpenCV's two code paths.
#include "common.cuh"

// cvRound(float): round half to even, saturating (NaN to INT_MIN like cvtss2si).
TVL1_FN int tvl1_round(float v)
{
    float r = rintf(v);
    if (!(r >= -2147483648.0f && r < 2147483648.0f)) return (int)0x80000000;
    return (int)r;
}

TVL1_FN float tvl1_sample_border(const float* src, int w, int h, int sx, int sy, const float* k)
{
    if (sx >= w || sx + 4 <= 0 || sy >= h || sy + 4 <= 0) return 0.0f;
    float sum = 0.0f;
    for (int i = 0; i < 4; ++i) {
        int y = sy + i;
        if (y < 0 || y >= h) continue;
        for (int j = 0; j < 4; ++j) {
            int x = sx + j;
            if (x >= 0 && x < w) sum += src[y * w + x] * k[i * 4 + j];
        }
    }
    return sum;
}

TVL1_FN float tvl1_sample_interior(const float* src, int w, int base, const float* k)
{
    float sum = 0.0f;
    for (int i = 0; i < 4; ++i) {
        const float* s = src + base + i * w;
        float r = s[0] * k[i * 4] + s[1] * k[i * 4 + 1] + s[2] * k[i * 4 + 2] + s[3] * k[i * 4 + 3];
        if (i == 0) sum = r; else sum += r;
    }
    return sum;
}

extern "C" __global__ void tvl1_warp(const float* i1, const float* i1x, const float* i1y, const float* i0,
                                     const float* u1, const float* u2, const float* table,
                                     float* i1wx, float* i1wy, float* grad, float* rho,
                                     int w, int h, int batch)
{
    int idx = tvl1_thread();
    int n = w * h;
    if (idx >= n * batch) return;
    int b = idx / n, i = idx - b * n;
    int x = i % w, y = i / w;
    long long o = (long long)b * n;
    float fu = u1[idx], fv = u2[idx];
    int ix = tvl1_round(((float)x + fu) * 32.0f);
    int iy = tvl1_round(((float)y + fv) * 32.0f);
    const float* k = table + ((iy & 31) * 32 + (ix & 31)) * 16;
    int sx = tvl1_clampi(ix >> 5, -32768, 32767) - 1;
    int sy = tvl1_clampi(iy >> 5, -32768, 32767) - 1;
    unsigned wu = w > 3 ? (unsigned)(w - 3) : 0u, hu = h > 3 ? (unsigned)(h - 3) : 0u;
    float vw, vx, vy;
    if ((unsigned)sx < wu && (unsigned)sy < hu) {
        int base = sy * w + sx;
        vw = tvl1_sample_interior(i1 + o, w, base, k);
        vx = tvl1_sample_interior(i1x + o, w, base, k);
        vy = tvl1_sample_interior(i1y + o, w, base, k);
    } else {
        vw = tvl1_sample_border(i1 + o, w, h, sx, sy, k);
        vx = tvl1_sample_border(i1x + o, w, h, sx, sy, k);
        vy = tvl1_sample_border(i1y + o, w, h, sx, sy, k);
    }
    i1wx[idx] = vx;
    i1wy[idx] = vy;
    grad[idx] = vx * vx + vy * vy;
    rho[idx] = vw - vx * fu - vy * fv - i0[idx];
}
