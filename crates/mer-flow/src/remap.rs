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
        let one: Vec<[f32; 4]> = (0..TAB)
            .map(|i| cubic_coeffs(i as f32 * (1.0 / TAB as f32)))
            .collect();
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

#[cfg(target_arch = "x86_64")]
/// The 1-D weights of [`table`]: entry `f` holds `cubic_coeffs(f / 32)`; `table()[fy * 32 +
/// fx][i * 4 + j]` is `ONE[fy][i] * ONE[fx][j]` rounded once, as these products are.
pub(crate) fn one_d() -> &'static [[f32; 4]] {
    static T: OnceLock<Vec<[f32; 4]>> = OnceLock::new();
    T.get_or_init(|| {
        (0..TAB)
            .map(|i| cubic_coeffs(i as f32 * (1.0 / TAB as f32)))
            .collect()
    })
}

#[cfg(target_arch = "x86_64")]
/// The x weights of entry `fx` spread for a row of four pixels of four lanes:
/// `[wx0 x4, wx1 x4, wx2 x4, wx3 x4]`.
pub(crate) fn spread_x() -> &'static [[f32; 16]] {
    static T: OnceLock<Vec<[f32; 16]>> = OnceLock::new();
    T.get_or_init(|| {
        one_d()
            .iter()
            .map(|wx| std::array::from_fn(|l| wx[l / 4]))
            .collect()
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
#[inline(always)]
pub(crate) fn tap(mx: f32, my: f32) -> Tap {
    let ix = round_i32(mx * TAB as f32);
    let iy = round_i32(my * TAB as f32);
    let w = ((iy & (TAB as i32 - 1)) * TAB as i32 + (ix & (TAB as i32 - 1))) as u16;
    let sx = (ix >> 5).clamp(i16::MIN as i32, i16::MAX as i32) - 1;
    let sy = (iy >> 5).clamp(i16::MIN as i32, i16::MAX as i32) - 1;
    Tap { sx, sy, w }
}

/// `cvRound(float)`: round half to even, saturating (NaN to `i32::MIN` like `cvtss2si`).
#[inline(always)]
fn round_i32(v: f32) -> i32 {
    let r = v.round_ties_even();
    // NaN is in no range.
    if (-2147483648.0..2147483648.0).contains(&r) {
        r as i32
    } else {
        i32::MIN
    }
}

/// Samples `src` (`w` x `h`) at a tap, exactly as OpenCV's `remapBicubic` (one plane: the
/// reference of the tests; the warp samples three planes at once).
#[cfg(test)]
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

/// The 4x4 weighted sums of an interior tap for the three interleaved planes
/// (I1, I1x, I1y, unused), each lane in OpenCV's order of operations.
#[inline(always)]
fn interior3(img: &[[f32; 4]], base: usize, w: usize, k: &[f32; 16]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        let r = |b: usize, j: usize| -> __m128 {
            let s = &img[b..b + 4];
            // SAFETY: SSE is part of the x86_64 baseline; s holds four [f32; 4].
            unsafe {
                let t0 = _mm_mul_ps(_mm_loadu_ps(s[0].as_ptr()), _mm_set1_ps(k[j * 4]));
                let t1 = _mm_mul_ps(_mm_loadu_ps(s[1].as_ptr()), _mm_set1_ps(k[j * 4 + 1]));
                let t2 = _mm_mul_ps(_mm_loadu_ps(s[2].as_ptr()), _mm_set1_ps(k[j * 4 + 2]));
                let t3 = _mm_mul_ps(_mm_loadu_ps(s[3].as_ptr()), _mm_set1_ps(k[j * 4 + 3]));
                _mm_add_ps(_mm_add_ps(_mm_add_ps(t0, t1), t2), t3)
            }
        };
        // SAFETY: SSE is part of the x86_64 baseline.
        unsafe {
            let mut sum = r(base, 0);
            sum = _mm_add_ps(sum, r(base + w, 1));
            sum = _mm_add_ps(sum, r(base + 2 * w, 2));
            sum = _mm_add_ps(sum, r(base + 3 * w, 3));
            let mut out = [0f32; 4];
            _mm_storeu_ps(out.as_mut_ptr(), sum);
            out
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut out = [0f32; 4];
        for (l, o) in out.iter_mut().enumerate() {
            let row = |b: usize, j: usize| {
                img[b][l] * k[j * 4]
                    + img[b + 1][l] * k[j * 4 + 1]
                    + img[b + 2][l] * k[j * 4 + 2]
                    + img[b + 3][l] * k[j * 4 + 3]
            };
            let mut sum = row(base, 0);
            sum += row(base + w, 1);
            sum += row(base + 2 * w, 2);
            sum += row(base + 3 * w, 3);
            *o = sum;
        }
        out
    }
}

/// The quantised taps of row `y` (as [`tap`]) into `sx`, `sy` and the table index `wi`.
/// On x86_64, four pixels at a time: `cvtps2dq` rounds half to even and gives `i32::MIN`
/// for NaN and out-of-range values, exactly `cvRound`; the clamp to `i16` is a saturating
/// pack.
#[inline(always)]
fn taps_row(u1: &[f32], u2: &[f32], y: usize, sx: &mut [i32], sy: &mut [i32], wi: &mut [i32]) {
    let w = u1.len();
    let (u2, sx, sy, wi) = (&u2[..w], &mut sx[..w], &mut sy[..w], &mut wi[..w]);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of the x86_64 baseline; every access is inside the slices
        // (x + 4 <= w).
        unsafe {
            let yv = _mm_set1_ps(y as f32);
            let step = _mm_setr_ps(0.0, 1.0, 2.0, 3.0);
            let tab = _mm_set1_ps(TAB as f32);
            let mask = _mm_set1_epi32(TAB as i32 - 1);
            let one = _mm_set1_epi32(1);
            let clamp16 = |v: __m128i| {
                let p = _mm_packs_epi32(v, v);
                _mm_srai_epi32::<16>(_mm_unpacklo_epi16(p, p))
            };
            while done + 4 <= w {
                let x = done;
                let xs = _mm_add_ps(_mm_set1_ps(x as f32), step);
                let mx = _mm_add_ps(xs, _mm_loadu_ps(u1.as_ptr().add(x)));
                let my = _mm_add_ps(yv, _mm_loadu_ps(u2.as_ptr().add(x)));
                let ix = _mm_cvtps_epi32(_mm_mul_ps(mx, tab));
                let iy = _mm_cvtps_epi32(_mm_mul_ps(my, tab));
                let wv = _mm_add_epi32(
                    _mm_slli_epi32::<5>(_mm_and_si128(iy, mask)),
                    _mm_and_si128(ix, mask),
                );
                let sxv = _mm_sub_epi32(clamp16(_mm_srai_epi32::<5>(ix)), one);
                let syv = _mm_sub_epi32(clamp16(_mm_srai_epi32::<5>(iy)), one);
                _mm_storeu_si128(sx.as_mut_ptr().add(x).cast(), sxv);
                _mm_storeu_si128(sy.as_mut_ptr().add(x).cast(), syv);
                _mm_storeu_si128(wi.as_mut_ptr().add(x).cast(), wv);
                done += 4;
            }
        }
    }
    let yf = y as f32;
    for x in done..w {
        let t = tap(x as f32 + u1[x], yf + u2[x]);
        sx[x] = t.sx;
        sy[x] = t.sy;
        wi[x] = i32::from(t.w);
    }
}

/// The sums of a tap that is not wholly inside the image, for the three interleaved planes
/// at once: as [`sample`] does per plane (OpenCV's border branch with a zero border value:
/// the taps inside the image added one by one from zero, row by row).
#[inline(always)]
fn border3(img: &[[f32; 4]], w: usize, h: usize, t: Tap, k: &[f32; 16]) -> [f32; 4] {
    let (wi, hi) = (w as i32, h as i32);
    let (sx, sy) = (t.sx, t.sy);
    if sx >= wi || sx + 4 <= 0 || sy >= hi || sy + 4 <= 0 {
        return [0.0; 4];
    }
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE is part of the x86_64 baseline; every index is inside `img`.
        unsafe {
            let mut sum = _mm_setzero_ps();
            for i in 0..4 {
                let y = sy + i as i32;
                if y < 0 || y >= hi {
                    continue;
                }
                let row = &img[y as usize * w..(y as usize + 1) * w];
                for j in 0..4 {
                    let x = sx + j as i32;
                    if x >= 0 && x < wi {
                        let v = _mm_loadu_ps(row[x as usize].as_ptr());
                        sum = _mm_add_ps(sum, _mm_mul_ps(v, _mm_set1_ps(k[i * 4 + j])));
                    }
                }
            }
            let mut out = [0f32; 4];
            _mm_storeu_ps(out.as_mut_ptr(), sum);
            out
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut sum = [0f32; 4];
        for i in 0..4 {
            let y = sy + i as i32;
            if y < 0 || y >= hi {
                continue;
            }
            for j in 0..4 {
                let x = sx + j as i32;
                if x >= 0 && x < wi {
                    let v = img[y as usize * w + x as usize];
                    for l in 0..4 {
                        sum[l] += v[l] * k[i * 4 + j];
                    }
                }
            }
        }
        sum
    }
}

/// [`interior3`] with AVX-512: each row of the 4x4 taps (four pixels of three planes,
/// 64 contiguous bytes) is one load and one multiply by its weights, `wy[i] * wx[j]` rounded
/// once as in the table (`wy` from [`one_d`], `wx` spread from [`spread_x`]: a multiply
/// instead of a permutation of the table entry); a transpose of the four products' 128-bit
/// blocks puts the j-th tap of every row in one vector, so three adds give the four row sums
/// and three more their sum, in `interior3`'s order (the same bits).
///
/// # Safety
/// The CPU must support AVX-512F, and `img[base + i * w..][..4]` must exist for i < 4.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn interior3_avx512(
    img: &[[f32; 4]],
    base: usize,
    w: usize,
    wy: &[f32; 4],
    wx: &[f32; 16],
) -> [f32; 4] {
    use std::arch::x86_64::*;
    debug_assert!(base + 3 * w + 4 <= img.len());
    // SAFETY: the four rows of four pixels are inside `img` (the caller's interior test).
    unsafe {
        let xv = _mm512_loadu_ps(wx.as_ptr());
        let ptr = img.as_ptr().add(base).cast::<f32>();
        // Row i's weights wy[i] * wx[j], rounded once: the table's entries.
        let row = |i: usize| {
            _mm512_mul_ps(
                _mm512_loadu_ps(ptr.add(4 * i * w)),
                _mm512_mul_ps(_mm512_set1_ps(wy[i]), xv),
            )
        };
        let (p0, p1, p2, p3) = (row(0), row(1), row(2), row(3));
        let x0 = _mm512_shuffle_f32x4::<0b01_00_01_00>(p0, p1);
        let x1 = _mm512_shuffle_f32x4::<0b11_10_11_10>(p0, p1);
        let x2 = _mm512_shuffle_f32x4::<0b01_00_01_00>(p2, p3);
        let x3 = _mm512_shuffle_f32x4::<0b11_10_11_10>(p2, p3);
        // t_j = [row 0 tap j, row 1 tap j, row 2 tap j, row 3 tap j].
        let t0 = _mm512_shuffle_f32x4::<0b10_00_10_00>(x0, x2);
        let t1 = _mm512_shuffle_f32x4::<0b11_01_11_01>(x0, x2);
        let t2 = _mm512_shuffle_f32x4::<0b10_00_10_00>(x1, x3);
        let t3 = _mm512_shuffle_f32x4::<0b11_01_11_01>(x1, x3);
        let r = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(t0, t1), t2), t3);
        let s = _mm_add_ps(
            _mm_add_ps(
                _mm_add_ps(_mm512_castps512_ps128(r), _mm512_extractf32x4_ps::<1>(r)),
                _mm512_extractf32x4_ps::<2>(r),
            ),
            _mm512_extractf32x4_ps::<3>(r),
        );
        let mut out = [0f32; 4];
        _mm_storeu_ps(out.as_mut_ptr(), s);
        out
    }
}

/// [`border3`] with AVX-512, without a branch per tap: a row's taps outside the image are
/// masked off at the load (their products are +-0), and the row's four products are added
/// to the sum one by one in `border3`'s order. Adding +-0 leaves the sum unchanged, since
/// a sum that starts at +0 is never -0, so skipping a tap and adding its zero product
/// agree. (Rows outside the image are skipped: a masked load there is slow.)
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn border3_avx512(img: &[[f32; 4]], w: usize, h: usize, t: Tap, k: &[f32; 16]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let (wi, hi) = (w as i32, h as i32);
    let (sx, sy) = (t.sx, t.sy);
    if sx >= wi || sx + 4 <= 0 || sy >= hi || sy + 4 <= 0 {
        return [0.0; 4];
    }
    // Lanes 4j..4j+3 hold tap j of a row: kept when column sx + j is inside the image.
    let mut cols: __mmask16 = 0;
    for j in 0..4 {
        if (0..wi).contains(&(sx + j)) {
            cols |= 0xF << (4 * j);
        }
    }
    // SAFETY: lanes outside the image are masked off (no access); the pointers of the rows
    // are only formed with wrapping arithmetic.
    unsafe {
        let kv = _mm512_loadu_ps(k.as_ptr());
        let base = img.as_ptr().cast::<f32>();
        let mut sum = _mm_setzero_ps();
        for i in 0..4 {
            let y = sy + i;
            if !(0..hi).contains(&y) {
                // A row outside the image: all 16 products are +-0, nothing to add.
                continue;
            }
            let at = (y as isize * w as isize + sx as isize) * 4;
            let v = _mm512_maskz_loadu_ps(cols, base.wrapping_offset(at));
            let c = 4 * i;
            let idx = _mm512_setr_epi32(
                c,
                c,
                c,
                c,
                c + 1,
                c + 1,
                c + 1,
                c + 1,
                c + 2,
                c + 2,
                c + 2,
                c + 2,
                c + 3,
                c + 3,
                c + 3,
                c + 3,
            );
            let p = _mm512_mul_ps(v, _mm512_permutexvar_ps(idx, kv));
            sum = _mm_add_ps(sum, _mm512_castps512_ps128(p));
            sum = _mm_add_ps(sum, _mm512_extractf32x4_ps::<1>(p));
            sum = _mm_add_ps(sum, _mm512_extractf32x4_ps::<2>(p));
            sum = _mm_add_ps(sum, _mm512_extractf32x4_ps::<3>(p));
        }
        let mut out = [0f32; 4];
        _mm_storeu_ps(out.as_mut_ptr(), sum);
        out
    }
}

/// Inputs of one warp: the second image and its gradients (interleaved), the first image
/// and the flow.
pub(crate) struct WarpIn<'a> {
    /// I1, I1x, I1y interleaved per pixel (fourth lane unused).
    pub packed: &'a [[f32; 4]],
    pub i0: &'a [f32],
    pub u1: &'a [f32],
    pub u2: &'a [f32],
    pub w: usize,
    pub h: usize,
}

/// Warps I1 and its gradients by the flow (OpenCV `buildFlowMap` + three
/// `remap` calls) and computes |grad I1w|^2 and the constant part of rho
/// (OpenCV `calcGradRho`) for rows `y0..y0 + rows`; outputs hold those rows.
#[inline(always)]
fn warp_rows_generic(
    a: &WarpIn<'_>,
    y0: usize,
    i1wx: &mut [f32],
    i1wy: &mut [f32],
    grad: &mut [f32],
    rho: &mut [f32],
) {
    warp_rows_with::<false>(a, y0, i1wx, i1wy, grad, rho)
}

/// `warp_rows_generic`; `WIDE` (only on a CPU with AVX-512F) sums the taps with
/// [`interior3_avx512`] and [`border3_avx512`].
#[inline(always)]
fn warp_rows_with<const WIDE: bool>(
    a: &WarpIn<'_>,
    y0: usize,
    i1wx: &mut [f32],
    i1wy: &mut [f32],
    grad: &mut [f32],
    rho: &mut [f32],
) {
    let (w, h) = (a.w, a.h);
    let tab = table();
    #[cfg(target_arch = "x86_64")]
    let (one, sx_tab) = (one_d(), spread_x());
    let rows = i1wx.len() / w;
    let (wu, hu) = ((w as u32).saturating_sub(3), (h as u32).saturating_sub(3));
    let mut sxs = vec![0i32; w];
    let mut sys = vec![0i32; w];
    let mut wis = vec![0i32; w];
    let mut vw = vec![0f32; w];
    for r in 0..rows {
        let y = y0 + r;
        let o = y * w;
        let (u1, u2, i0) = (&a.u1[o..o + w], &a.u2[o..o + w], &a.i0[o..o + w]);
        // Pass 1 (vectorised): quantised taps of the row.
        taps_row(u1, u2, y, &mut sxs, &mut sys, &mut wis);
        // Pass 2: the 4x4 sums, three planes at once.
        let (ox, oy) = (&mut i1wx[r * w..(r + 1) * w], &mut i1wy[r * w..(r + 1) * w]);
        for x in 0..w {
            let t = Tap {
                sx: sxs[x],
                sy: sys[x],
                w: wis[x] as u16,
            };
            let v = if (t.sx as u32) < wu && (t.sy as u32) < hu {
                #[cfg(target_arch = "x86_64")]
                if WIDE {
                    // SAFETY: `WIDE` is only set on a CPU with AVX-512F; the tap is interior.
                    unsafe {
                        interior3_avx512(
                            a.packed,
                            t.sy as usize * w + t.sx as usize,
                            w,
                            &one[t.w as usize >> 5],
                            &sx_tab[t.w as usize & 31],
                        )
                    }
                } else {
                    interior3(
                        a.packed,
                        t.sy as usize * w + t.sx as usize,
                        w,
                        &tab[t.w as usize],
                    )
                }
                #[cfg(not(target_arch = "x86_64"))]
                interior3(
                    a.packed,
                    t.sy as usize * w + t.sx as usize,
                    w,
                    &tab[t.w as usize],
                )
            } else {
                #[cfg(target_arch = "x86_64")]
                if WIDE {
                    // SAFETY: `WIDE` is only set on a CPU with AVX-512F.
                    unsafe { border3_avx512(a.packed, w, h, t, &tab[t.w as usize]) }
                } else {
                    border3(a.packed, w, h, t, &tab[t.w as usize])
                }
                #[cfg(not(target_arch = "x86_64"))]
                border3(a.packed, w, h, t, &tab[t.w as usize])
            };
            vw[x] = v[0];
            ox[x] = v[1];
            oy[x] = v[2];
        }
        // Pass 3 (vectorised): |grad|^2 and the constant part of rho.
        let (g, rh) = (&mut grad[r * w..(r + 1) * w], &mut rho[r * w..(r + 1) * w]);
        let (ox, oy, vw) = (&ox[..w], &oy[..w], &vw[..w]);
        for x in 0..w {
            g[x] = ox[x] * ox[x] + oy[x] * oy[x];
            rh[x] = vw[x] - ox[x] * u1[x] - oy[x] * u2[x] - i0[x];
        }
    }
}

/// See [`warp_rows_generic`]; dispatched on the CPU's instruction set.
pub(crate) fn warp_rows(
    a: &WarpIn<'_>,
    y0: usize,
    i1wx: &mut [f32],
    i1wy: &mut [f32],
    grad: &mut [f32],
    rho: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::has_avx512() {
        #[target_feature(enable = "avx512f")]
        unsafe fn wide(
            a: &WarpIn<'_>,
            y0: usize,
            i1wx: &mut [f32],
            i1wy: &mut [f32],
            grad: &mut [f32],
            rho: &mut [f32],
        ) {
            warp_rows_with::<true>(a, y0, i1wx, i1wy, grad, rho)
        }
        // SAFETY: the CPU supports AVX-512F (checked at run time).
        return unsafe { wide(a, y0, i1wx, i1wy, grad, rho) };
    }
    warp_rows_llvm(a, y0, i1wx, i1wy, grad, rho)
}

crate::cpu::simd_dispatch!(
    fn warp_rows_llvm(
        a: &WarpIn<'_>,
        y0: usize,
        i1wx: &mut [f32],
        i1wy: &mut [f32],
        grad: &mut [f32],
        rho: &mut [f32],
    ) = warp_rows_generic
);

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

    /// The AVX-512 taps (interior: one load and multiply per row and a transpose; border:
    /// masked loads) give the baseline build's bits, on flows that move taps across every
    /// border and out of the image, with zeros of both signs in the planes.
    #[test]
    fn avx512_warp_equals_the_baseline_warp() {
        #[cfg(target_arch = "x86_64")]
        {
            if !crate::cpu::has_avx512() {
                eprintln!("skipped: this CPU has no AVX-512F");
                return;
            }
            for (w, h) in [(1, 1), (3, 2), (4, 4), (5, 7), (17, 9), (33, 20)] {
                let n = w * h;
                let plane = |m: usize, off: f32| -> Vec<f32> {
                    (0..n)
                        .map(|i| match (i * m) % 13 {
                            0 => 0.0,
                            1 => -0.0,
                            v => v as f32 * 0.37 - off,
                        })
                        .collect()
                };
                let packed: Vec<[f32; 4]> = {
                    let (a, b, c) = (plane(7, 2.0), plane(5, 1.0), plane(3, 3.0));
                    (0..n).map(|i| [a[i], b[i], c[i], 0.0]).collect()
                };
                let i0 = plane(11, 0.5);
                for scale in [0.3f32, 1.7, 4.5] {
                    let u1: Vec<f32> = (0..n)
                        .map(|i| ((i * 37 % 23) as f32 - 11.0) * scale * 0.29)
                        .collect();
                    let u2: Vec<f32> = (0..n)
                        .map(|i| ((i * 53 % 19) as f32 - 9.0) * scale * 0.31)
                        .collect();
                    let a = WarpIn {
                        packed: &packed,
                        i0: &i0,
                        u1: &u1,
                        u2: &u2,
                        w,
                        h,
                    };
                    let run = |wide: bool| {
                        let mut o = [vec![0f32; n], vec![0f32; n], vec![0f32; n], vec![0f32; n]];
                        let [x, y, g, r] = &mut o;
                        if wide {
                            warp_rows(&a, 0, x, y, g, r);
                        } else {
                            warp_rows_generic(&a, 0, x, y, g, r);
                        }
                        o.map(|v| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>())
                    };
                    assert_eq!(run(true), run(false), "{w}x{h}, flow scale {scale}");
                }
            }
        }
    }

    #[test]
    fn border_taps_of_three_planes_equal_one_plane_sampling() {
        let (w, h) = (11, 9);
        let plane = |m: usize| -> Vec<f32> {
            (0..w * h)
                .map(|i| ((i * m) % 17) as f32 * 0.37 - 2.0)
                .collect()
        };
        let (a, b, c) = (plane(7), plane(5), plane(3));
        let packed: Vec<[f32; 4]> = (0..w * h).map(|i| [a[i], b[i], c[i], 0.0]).collect();
        for my in -40..(h as i32 * 8 + 40) {
            for mx in -40..(w as i32 * 8 + 40) {
                let t = tap(mx as f32 * 0.13, my as f32 * 0.125 - 0.01);
                if (t.sx as u32) < w as u32 - 3 && (t.sy as u32) < h as u32 - 3 {
                    continue; // interior: the other formula
                }
                let got = border3(&packed, w, h, t, &table()[t.w as usize]);
                for (l, src) in [&a, &b, &c].into_iter().enumerate() {
                    let expect = sample(src, w, h, t, table());
                    assert_eq!(got[l].to_bits(), expect.to_bits(), "{mx} {my} plane {l}");
                }
            }
        }
    }

    #[test]
    fn row_taps_equal_scalar_taps() {
        let w = 23;
        let specials = [
            0.015625,
            0.046875,
            -0.015625,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            3e9,
            -3e9,
            1e6,
            -1e6,
            -0.0,
            1023.984375,
        ];
        let mut seed = 9u32;
        for y in [0usize, 5, 40] {
            let mut u1 = vec![0f32; w];
            let mut u2 = vec![0f32; w];
            for x in 0..w {
                seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                u1[x] = ((seed >> 8) as f32 / (1 << 24) as f32 - 0.5) * 9.0;
                u2[x] = specials[(x + y) % specials.len()];
            }
            u1[3] = f32::NAN;
            u1[7] = 4e9;
            let (mut sx, mut sy, mut wi) = (vec![0; w], vec![0; w], vec![0; w]);
            taps_row(&u1, &u2, y, &mut sx, &mut sy, &mut wi);
            for x in 0..w {
                let t = tap(x as f32 + u1[x], y as f32 + u2[x]);
                assert_eq!(
                    (sx[x], sy[x], wi[x]),
                    (t.sx, t.sy, i32::from(t.w)),
                    "x {x} y {y}"
                );
            }
        }
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
