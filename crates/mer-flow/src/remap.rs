//! Bicubic warping as OpenCV's `remap(.., INTER_CUBIC, BORDER_CONSTANT, 0)` does it
//! for `CV_32F` images and planar float maps: coordinates are quantised to 1/32
//! pixel (round half to even), the 4x4 weights come from a float table built
//! with A = -0.75, taps outside the image count as zero.

use std::sync::OnceLock;

const TAB: usize = 32;

/// OpenCV's `interpolateCubic` in f32.
fn cubic_coeffs(x: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let c0 = ((A * (x + 1.0) - 5.0 * A) * (x + 1.0) + 8.0 * A) * (x + 1.0) - 4.0 * A;
    let c1 = ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let c2 = ((A + 2.0) * (1.0 - x) - (A + 3.0)) * (1.0 - x) * (1.0 - x) + 1.0;
    let c3 = 1.0 - c0 - c1 - c2;
    [c0, c1, c2, c3]
}

/// The 2-D table: entry `fy * 32 + fx` holds `wy[i] * wx[j]` at `i * 4 + j`.
pub(crate) fn table() -> &'static [[f32; 16]] {
    static T: OnceLock<Vec<[f32; 16]>> = OnceLock::new();
    T.get_or_init(|| {
        let one: Vec<[f32; 4]> = (0..TAB).map(|i| cubic_coeffs(i as f32 * (1.0 / TAB as f32))).collect();
        let mut t = Vec::with_capacity(TAB * TAB);
        for wy in &one {
            for wx in &one {
                let mut k = [0f32; 16];
                for i in 0..4 {
                    for j in 0..4 {
                        k[i * 4 + j] = wy[i] * wx[j];
                    }
                }
                t.push(k);
            }
        }
        t
    })
}

/// A quantised sampling position: top-left tap (`x - 1`, `y - 1`) and table index.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Tap {
    pub sx: i32,
    pub sy: i32,
    pub w: u16,
}

/// The quantised position of map coordinate (`mx`, `my`), as OpenCV's `RemapInvoker`.
#[inline]
pub(crate) fn tap(mx: f32, my: f32) -> Tap {
    let ix = round_i32(mx * TAB as f32);
    let iy = round_i32(my * TAB as f32);
    let w = ((iy & (TAB as i32 - 1)) * TAB as i32 + (ix & (TAB as i32 - 1))) as u16;
    let sx = (ix >> 5).clamp(i16::MIN as i32, i16::MAX as i32) - 1;
    let sy = (iy >> 5).clamp(i16::MIN as i32, i16::MAX as i32) - 1;
    Tap { sx, sy, w }
}

/// `cvRound(float)`: round half to even, saturating (NaN to `i32::MIN` like `cvtss2si`).
#[inline]
fn round_i32(v: f32) -> i32 {
    let r = v.round_ties_even();
    if r.is_nan() || r >= 2147483648.0 || r < -2147483648.0 {
        i32::MIN
    } else {
        r as i32
    }
}

/// Samples `src` (`w` x `h`) at a tap, exactly as OpenCV's `remapBicubic`.
#[inline]
pub(crate) fn sample(src: &[f32], w: usize, h: usize, t: Tap, tab: &[[f32; 16]]) -> f32 {
    let k = &tab[t.w as usize];
    let (sx, sy) = (t.sx, t.sy);
    if (sx as u32) < (w as u32).saturating_sub(3) && (sy as u32) < (h as u32).saturating_sub(3) {
        let base = sy as usize * w + sx as usize;
        let r = |i: usize| {
            let s = &src[base + i * w..base + i * w + 4];
            s[0] * k[i * 4] + s[1] * k[i * 4 + 1] + s[2] * k[i * 4 + 2] + s[3] * k[i * 4 + 3]
        };
        let mut sum = r(0);
        sum += r(1);
        sum += r(2);
        sum += r(3);
        sum
    } else {
        let (wi, hi) = (w as i32, h as i32);
        if sx >= wi || sx + 4 <= 0 || sy >= hi || sy + 4 <= 0 {
            return 0.0;
        }
        let mut sum = 0.0f32;
        for i in 0..4 {
            let y = sy + i as i32;
            if y < 0 || y >= hi {
                continue;
            }
            let row = &src[y as usize * w..(y as usize + 1) * w];
            for j in 0..4 {
                let x = sx + j as i32;
                if x >= 0 && x < wi {
                    sum += row[x as usize] * k[i * 4 + j];
                }
            }
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_integer_shift_is_exact() {
        for k in table() {
            let s: f32 = k.iter().sum();
            assert!((s - 1.0).abs() < 1e-5, "{s}");
        }
        let (w, h) = (9, 8);
        let src: Vec<f32> = (0..w * h).map(|i| (i * 7 % 13) as f32).collect();
        // An integer position reproduces the pixel exactly.
        let t = tap(4.0, 3.0);
        assert_eq!(sample(&src, w, h, t, table()), src[3 * w + 4]);
        // Far outside is zero; on the border only in-image taps count.
        assert_eq!(sample(&src, w, h, tap(-5.0, 2.0), table()), 0.0);
        assert_eq!(sample(&src, w, h, tap(0.0, 0.0), table()), src[0]);
    }

    #[test]
    fn quantisation_rounds_half_to_even() {
        // 0.015625 * 32 = 0.5 -> 0; 0.046875 * 32 = 1.5 -> 2.
        assert_eq!(tap(0.015625, 0.0).w, 0);
        assert_eq!(tap(0.046875, 0.0).w, 2);
        let t = tap(-0.25, 1.5);
        assert_eq!((t.sx, t.sy, t.w), (-2, 0, 16 * 32 + 24));
    }
}
