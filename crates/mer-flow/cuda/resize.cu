// Pyramid resize: bilinear, as OpenCV's resize(.., INTER_LINEAR) for CV_32F
// (and crates/mer-flow/src/resize.rs): per-axis f32 weights from
// (d + 0.5) * scale - 0.5 computed in double, a horizontal then a vertical
// interpolation, clamped borders. The result is multiplied by `mul` (1 for
// images, which is exact; 1/scale_step when upscaling a flow).
// `scale_x`/`scale_y` are the source/destination ratios as OpenCV uses them.
#include "common.cuh"

extern "C" __global__ void tvl1_resize(const float* src, int sw, int sh, float* dst, int dw, int dh,
                                       double scale_x, double scale_y, float mul, int batch)
{
    int idx = tvl1_thread();
    int n = dw * dh;
    if (idx >= n * batch) return;
    int b = idx / n, i = idx - b * n;
    int dx = i % dw, dy = i / dw;
    const float* s = src + (long long)b * sw * sh;

    // Horizontal: OpenCV clamps the source column and zeroes the fraction at both ends.
    float fxs = (float)(((double)dx + 0.5) * scale_x - 0.5);
    float flx = floorf(fxs);
    float fx = fxs - flx;
    int sx = (int)flx;
    if (sx < 0) { fx = 0.0f; sx = 0; }
    int xlast = sx + 1 >= sw;
    if (xlast) { fx = 0.0f; sx = sw - 1; }
    float a0 = 1.0f - fx, a1 = fx;

    // Vertical: the two source rows are clamped, the fraction kept.
    float fys = (float)(((double)dy + 0.5) * scale_y - 0.5);
    float fly = floorf(fys);
    float fy = fys - fly;
    int sy = (int)fly;
    int y0 = tvl1_clampi(sy, 0, sh - 1), y1 = tvl1_clampi(sy + 1, 0, sh - 1);
    float b0 = 1.0f - fy, b1 = fy;

    const float* r0 = s + (long long)y0 * sw;
    const float* r1 = s + (long long)y1 * sw;
    float h0, h1;
    if (xlast) {
        h0 = r0[sx];
        h1 = r1[sx];
    } else {
        h0 = r0[sx] * a0 + r0[sx + 1] * a1;
        h1 = r1[sx] * a0 + r1[sx + 1] * a1;
    }
    float v = h0 * b0 + h1 * b1;
    dst[idx] = v * mul;
}
