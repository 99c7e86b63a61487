// Median filter of the flow components with replicated borders (OpenCV
// medianBlur for CV_32F, sizes 3 and 5), as median.rs: the same comparison
// networks (Paeth / Devillard median of 25; 19-comparator median of 9). A
// median is unique, so any exact selection equals OpenCV's. For a pair whose
// iteration has stopped (active == 0) the kernel copies src to dst, so that
// the caller may copy dst back for the whole batch.
#include "common.cuh"

#define S(a, b) { float x_ = p[a], y_ = p[b]; p[a] = y_ < x_ ? y_ : x_; p[b] = y_ < x_ ? x_ : y_; }

TVL1_FN float tvl1_med25(float* p)
{
    S(0,1); S(3,4); S(2,4); S(2,3); S(6,7); S(5,7); S(5,6); S(9,10); S(8,10); S(8,9); S(12,13);
    S(11,13); S(11,12); S(15,16); S(14,16); S(14,15); S(18,19); S(17,19); S(17,18); S(21,22);
    S(20,22); S(20,21); S(23,24); S(2,5); S(3,6); S(0,6); S(0,3); S(4,7); S(1,7); S(1,4); S(11,14);
    S(8,14); S(8,11); S(12,15); S(9,15); S(9,12); S(13,16); S(10,16); S(10,13); S(20,23); S(17,23);
    S(17,20); S(21,24); S(18,24); S(18,21); S(19,22); S(8,17); S(9,18); S(0,18); S(0,9); S(10,19);
    S(1,19); S(1,10); S(11,20); S(2,20); S(2,11); S(12,21); S(3,21); S(3,12); S(13,22); S(4,22);
    S(4,13); S(14,23); S(5,23); S(5,14); S(15,24); S(6,24); S(6,15); S(7,16); S(7,19); S(13,21);
    S(15,23); S(7,13); S(7,15); S(1,9); S(3,11); S(5,17); S(11,17); S(9,17); S(4,10); S(6,12);
    S(7,14); S(4,6); S(4,7); S(12,14); S(10,14); S(6,7); S(10,12); S(6,10); S(6,17); S(12,17);
    S(7,17); S(7,10); S(12,18); S(7,12); S(10,18); S(12,20); S(10,20); S(10,12);
    return p[12];
}

TVL1_FN float tvl1_med9(float* p)
{
    S(1,2); S(4,5); S(7,8); S(0,1); S(3,4); S(6,7); S(1,2); S(4,5); S(7,8); S(0,3); S(5,8); S(4,7);
    S(3,6); S(1,4); S(2,5); S(4,7); S(4,2); S(6,4); S(4,2);
    return p[4];
}

#undef S

extern "C" __global__ void tvl1_median(const float* src, float* dst, int ksize, const int* active, int w, int h, int batch)
{
    int idx = tvl1_thread();
    int n = w * h;
    if (idx >= n * batch) return;
    int b = idx / n, i = idx - b * n;
    if (!active[b]) {
        dst[idx] = src[idx];
        return;
    }
    int x = i % w, y = i / w;
    const float* s = src + (long long)b * n;
    int r = ksize / 2;
    float p[25];
    int c = 0;
    for (int dy = -r; dy <= r; ++dy) {
        int yy = tvl1_clampi(y + dy, 0, h - 1);
        for (int dx = -r; dx <= r; ++dx) {
            int xx = tvl1_clampi(x + dx, 0, w - 1);
            p[c++] = s[yy * w + xx];
        }
    }
    dst[idx] = ksize == 5 ? tvl1_med25(p) : tvl1_med9(p);
}
