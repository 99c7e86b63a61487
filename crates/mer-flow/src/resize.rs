//! Bilinear resize of f32 planes, computed as OpenCV's `resize(.., INTER_LINEAR)`
//! computes it for `CV_32F`: per-axis float weights from
//! `(d + 0.5) * scale - 0.5`, a horizontal pass then a vertical pass, clamped
//! borders.

/// How the source/destination scale is stated, which decides OpenCV's mapping.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Scale {
    /// `resize(src, dst, Size(), f, f)`: the mapping uses `1/f` exactly and the
    /// destination size is `round(src * f)`.
    Factor(f64),
    /// `resize(src, dst, dsize)`: the mapping uses the true size ratio.
    ToSize(usize, usize),
}

/// OpenCV's `saturate_cast<int>(double)`: round half to even.
pub(crate) fn cv_round(v: f64) -> usize {
    v.round_ties_even().max(0.0) as usize
}

/// Destination size of a resize.
pub(crate) fn dst_size(sw: usize, sh: usize, scale: Scale) -> (usize, usize) {
    match scale {
        Scale::Factor(f) => (cv_round(sw as f64 * f), cv_round(sh as f64 * f)),
        Scale::ToSize(w, h) => (w, h),
    }
}

struct Axis {
    ofs: Vec<usize>,
    a0: Vec<f32>,
    a1: Vec<f32>,
}

/// Horizontal weights: OpenCV clamps `sx` and zeroes the fraction at both ends.
fn x_axis(src: usize, dst: usize, scale: f64) -> (Axis, usize) {
    let mut ax = Axis {
        ofs: Vec::with_capacity(dst),
        a0: Vec::with_capacity(dst),
        a1: Vec::with_capacity(dst),
    };
    let mut xmax = dst;
    for d in 0..dst {
        let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
        let s = f.floor();
        let mut fx = f - s;
        let mut sx = s as i64;
        if sx < 0 {
            fx = 0.0;
            sx = 0;
        }
        if sx + 1 >= src as i64 {
            xmax = xmax.min(d);
            if sx >= src as i64 - 1 {
                fx = 0.0;
                sx = src as i64 - 1;
            }
        }
        ax.ofs.push(sx as usize);
        ax.a0.push(1.0 - fx);
        ax.a1.push(fx);
    }
    (ax, xmax)
}

/// Vertical weights: OpenCV clamps the two source rows but keeps the fraction.
fn y_axis(src: usize, dst: usize, scale: f64) -> Vec<(usize, usize, f32, f32)> {
    (0..dst)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let s = f.floor();
            let fy = f - s;
            let sy = s as i64;
            let clip = |v: i64| v.clamp(0, src as i64 - 1) as usize;
            (clip(sy), clip(sy + 1), 1.0 - fy, fy)
        })
        .collect()
}

/// Resizes `src` (`sw` x `sh`) into `dst` (its size from `scale`), returning that size.
/// `row0`/`row1` are scratch rows of at least the destination width.
pub(crate) fn resize_linear(
    src: &[f32],
    sw: usize,
    sh: usize,
    scale: Scale,
    dst: &mut Vec<f32>,
) -> (usize, usize) {
    let (dw, dh) = dst_size(sw, sh, scale);
    let (sx, sy) = match scale {
        Scale::Factor(f) => (1.0 / f, 1.0 / f),
        Scale::ToSize(w, h) => (1.0 / (w as f64 / sw as f64), 1.0 / (h as f64 / sh as f64)),
    };
    let (ax, xmax) = x_axis(sw, dw, sx);
    let ys = y_axis(sh, dh, sy);
    dst.clear();
    dst.resize(dw * dh, 0.0);
    let hrow = |y: usize, out: &mut [f32]| {
        let s = &src[y * sw..(y + 1) * sw];
        for d in 0..xmax {
            let o = ax.ofs[d];
            out[d] = s[o] * ax.a0[d] + s[o + 1] * ax.a1[d];
        }
        for d in xmax..dw {
            out[d] = s[ax.ofs[d]];
        }
    };
    let mut r0 = vec![0.0f32; dw];
    let mut r1 = vec![0.0f32; dw];
    let mut cached: (usize, usize) = (usize::MAX, usize::MAX);
    for (dy, &(y0, y1, b0, b1)) in ys.iter().enumerate() {
        if cached.0 != y0 {
            if cached.1 == y0 {
                std::mem::swap(&mut r0, &mut r1);
                cached.1 = usize::MAX;
            } else {
                hrow(y0, &mut r0);
            }
            cached.0 = y0;
        }
        if cached.1 != y1 {
            hrow(y1, &mut r1);
            cached.1 = y1;
        }
        let out = &mut dst[dy * dw..(dy + 1) * dw];
        for ((o, &a), &b) in out.iter_mut().zip(&r0).zip(&r1) {
            *o = a * b0 + b * b1;
        }
    }
    (dw, dh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyramid_sizes_follow_opencv() {
        // 112 -> 90 -> 72 -> 58 -> 46 (OpenCV rounds src * 0.8).
        let mut w = 112;
        let mut sizes = vec![w];
        for _ in 0..4 {
            w = dst_size(w, w, Scale::Factor(0.8)).0;
            sizes.push(w);
        }
        assert_eq!(sizes, vec![112, 90, 72, 58, 46]);
    }

    #[test]
    fn constant_stays_constant_and_ramp_is_linear() {
        let src = vec![3.5f32; 10 * 7];
        let mut dst = Vec::new();
        let (w, h) = resize_linear(&src, 10, 7, Scale::ToSize(13, 9), &mut dst);
        assert_eq!((w, h), (13, 9));
        assert!(dst.iter().all(|&v| (v - 3.5).abs() < 1e-6));
        // A horizontal ramp downsampled by 0.5 samples the midpoints.
        let src: Vec<f32> = (0..8).flat_map(|_| (0..8).map(|x| x as f32)).collect();
        let (w, _) = resize_linear(&src, 8, 8, Scale::Factor(0.5), &mut dst);
        assert_eq!(w, 4);
        assert_eq!(&dst[..4], &[0.5, 2.5, 4.5, 6.5]);
    }
}
