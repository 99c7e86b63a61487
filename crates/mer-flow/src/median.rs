//! Median filtering of f32 planes with replicated borders, as OpenCV's
//! `medianBlur` (3x3 and 5x5 are the sizes OpenCV supports for float images).
//! A median is unique, so any exact selection equals OpenCV's.

#[inline(always)]
fn sort2(p: &mut [f32], a: usize, b: usize) {
    let (x, y) = (p[a], p[b]);
    p[a] = if y < x { y } else { x };
    p[b] = if y < x { x } else { y };
}

/// Median of 9 values by a fixed comparison network.
#[inline(always)]
fn med9(p: &mut [f32; 9]) -> f32 {
    const NET: [(usize, usize); 19] = [
        (1, 2),
        (4, 5),
        (7, 8),
        (0, 1),
        (3, 4),
        (6, 7),
        (1, 2),
        (4, 5),
        (7, 8),
        (0, 3),
        (5, 8),
        (4, 7),
        (3, 6),
        (1, 4),
        (2, 5),
        (4, 7),
        (4, 2),
        (6, 4),
        (4, 2),
    ];
    for &(a, b) in NET.iter() {
        sort2(p, a, b);
    }
    p[4]
}

/// The 99-comparator median-of-25 network (Paeth / Devillard), as a macro so
/// that each lane type gets straight-line code on registers.
macro_rules! med25_net {
    ($p:ident, $min:expr, $max:expr) => {
        med25_net!(@ $p, $min, $max;
            (0, 1), (3, 4), (2, 4), (2, 3), (6, 7), (5, 7), (5, 6), (9, 10), (8, 10), (8, 9),
            (12, 13), (11, 13), (11, 12), (15, 16), (14, 16), (14, 15), (18, 19), (17, 19), (17, 18), (21, 22),
            (20, 22), (20, 21), (23, 24), (2, 5), (3, 6), (0, 6), (0, 3), (4, 7), (1, 7), (1, 4),
            (11, 14), (8, 14), (8, 11), (12, 15), (9, 15), (9, 12), (13, 16), (10, 16), (10, 13), (20, 23),
            (17, 23), (17, 20), (21, 24), (18, 24), (18, 21), (19, 22), (8, 17), (9, 18), (0, 18), (0, 9),
            (10, 19), (1, 19), (1, 10), (11, 20), (2, 20), (2, 11), (12, 21), (3, 21), (3, 12), (13, 22),
            (4, 22), (4, 13), (14, 23), (5, 23), (5, 14), (15, 24), (6, 24), (6, 15), (7, 16), (7, 19),
            (13, 21), (15, 23), (7, 13), (7, 15), (1, 9), (3, 11), (5, 17), (11, 17), (9, 17), (4, 10),
            (6, 12), (7, 14), (4, 6), (4, 7), (12, 14), (10, 14), (6, 7), (10, 12), (6, 10), (6, 17),
            (12, 17), (7, 17), (7, 10), (12, 18), (7, 12), (10, 18), (12, 20), (10, 20), (10, 12))
    };
    (@ $p:ident, $min:expr, $max:expr; $(($a:expr, $b:expr)),*) => {
        $(
            {
                let (x, y) = ($p[$a], $p[$b]);
                $p[$a] = $min(x, y);
                $p[$b] = $max(x, y);
            }
        )*
    };
}

/// Comparator networks for two vertically adjacent 5x5 medians at once. Their windows
/// share four rows (20 values). `shared_net!` brings the values of ranks 7..=12 of those 20
/// to positions 7..=12, sorted: the 7 below are at or below the median of either window
/// (13 of its 25 values are at least as large) and the 7 above at or above it, so each
/// median is the median of those 6 and the window's own fifth row, 11 values, which
/// `out_net!` leaves at position 5 (the 6 first, sorted). 84 + 2 x 19 comparators instead
/// of 2 x 99. Both were pruned from Batcher's networks and checked on every 0-1 input (the
/// 0-1 principle: they select by comparisons only); the tests compare them with sorting.
macro_rules! shared_net {
    ($p:ident, $min:expr, $max:expr) => {
        net!($p, $min, $max;
            (0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11), (12, 13), (14, 15), (16,
            17), (18, 19), (0, 2), (1, 3), (4, 6), (5, 7), (8, 10), (9, 11), (12, 14),
            (13, 15), (16, 18), (17, 19), (1, 2), (5, 6), (9, 10), (13, 14), (17, 18),
            (0, 4), (1, 5), (2, 6), (3, 7), (8, 12), (9, 13), (10, 14), (11, 15), (2,
            4), (3, 5), (10, 12), (11, 13), (1, 2), (3, 4), (5, 6), (9, 10), (11, 12),
            (13, 14), (0, 8), (1, 9), (2, 10), (3, 11), (4, 12), (5, 13), (6, 14), (7,
            15), (4, 8), (5, 9), (6, 10), (7, 11), (2, 4), (3, 5), (6, 8), (7, 9), (10,
            12), (11, 13), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (3, 19), (8, 16),
            (9, 17), (10, 18), (11, 19), (4, 8), (5, 9), (6, 10), (7, 11), (12, 16),
            (13, 17), (6, 8), (7, 9), (10, 12), (11, 13), (7, 8), (9, 10), (11, 12))
    };
}

macro_rules! out_net {
    ($p:ident, $min:expr, $max:expr) => {
        net!($p, $min, $max;
            (6, 7), (9, 10), (8, 10), (8, 9), (7, 10), (6, 9), (6, 8), (7, 9), (7, 8),
            (0, 6), (4, 10), (4, 6), (2, 8), (8, 6), (1, 7), (5, 7), (3, 9), (3, 5), (5,
            8))
    };
}

/// Applies comparators `(a, b)`: the smaller value to `a`, the larger to `b`.
macro_rules! net {
    ($p:ident, $min:expr, $max:expr; $(($a:expr, $b:expr)),*) => {
        $(
            {
                let (x, y) = ($p[$a], $p[$b]);
                $p[$a] = $min(x, y);
                $p[$b] = $max(x, y);
            }
        )*
    };
}

/// The SIMD 5x5 medians for one vector type: `$row` (one row) and `$rows2` (two rows, see
/// `shared_net!`), `$lanes` pixels at a time; each returns how many pixels it wrote (all of
/// them, or 0 for a row narrower than a vector). The tail is one overlapping block: the
/// overlap is recomputed identically. minps/maxps return the second operand when
/// unordered; no NaN reaches here.
#[cfg(target_arch = "x86_64")]
macro_rules! simd_medians {
    ($feature:literal, $lanes:literal, $row:ident, $rows2:ident,
     $zero:ident, $load:ident, $store:ident, $min:ident, $max:ident) => {
        #[doc = concat!("5x5 medians of one row, ", $lanes, " pixels at a time (", $feature, ").")]
        #[target_feature(enable = $feature)]
        pub(super) unsafe fn $row(rows: &[&[f32]; 5], out: &mut [f32]) -> usize {
            const L: usize = $lanes;
            let w = out.len();
            if w < L {
                return 0;
            }
            let block = |x: usize, out: &mut [f32]| {
                let mut p = [$zero(); 25];
                for i in 0..5 {
                    let r = &rows[i][x..x + 4 + L];
                    for j in 0..5 {
                        // SAFETY: r holds at least j + L values.
                        p[i * 5 + j] = unsafe { $load(r.as_ptr().add(j)) };
                    }
                }
                med25_net!(p, |a, b| $min(a, b), |a, b| $max(a, b));
                let o = &mut out[x..x + L];
                // SAFETY: o holds L values.
                unsafe { $store(o.as_mut_ptr(), p[12]) };
            };
            let mut x = 0;
            while x + L <= w {
                block(x, out);
                x += L;
            }
            if x < w {
                block(w - L, out);
            }
            w
        }

        #[doc = concat!("5x5 medians of two rows (`rows[0..5]` and `rows[1..6]`), ", $lanes,
                                        " pixels at a time (", $feature, "; see `shared_net!`).")]
        #[target_feature(enable = $feature)]
        pub(super) unsafe fn $rows2(
            rows: &[&[f32]; 6],
            out0: &mut [f32],
            out1: &mut [f32],
        ) -> usize {
            const L: usize = $lanes;
            let w = out0.len();
            if w < L {
                return 0;
            }
            let block = |x: usize, out0: &mut [f32], out1: &mut [f32]| {
                let mut s = [$zero(); 20];
                for i in 0..4 {
                    let r = &rows[i + 1][x..x + 4 + L];
                    for j in 0..5 {
                        // SAFETY: r holds at least j + L values.
                        s[i * 5 + j] = unsafe { $load(r.as_ptr().add(j)) };
                    }
                }
                shared_net!(s, |a, b| $min(a, b), |a, b| $max(a, b));
                for (k, out) in [(0, out0), (5, out1)] {
                    let mut p = [$zero(); 11];
                    p[..6].copy_from_slice(&s[7..13]);
                    let r = &rows[k][x..x + 4 + L];
                    for j in 0..5 {
                        // SAFETY: r holds at least j + L values.
                        p[6 + j] = unsafe { $load(r.as_ptr().add(j)) };
                    }
                    out_net!(p, |a, b| $min(a, b), |a, b| $max(a, b));
                    let o = &mut out[x..x + L];
                    // SAFETY: o holds L values.
                    unsafe { $store(o.as_mut_ptr(), p[5]) };
                }
            };
            let mut x = 0;
            while x + L <= w {
                block(x, out0, out1);
                x += L;
            }
            if x < w {
                block(w - L, out0, out1);
            }
            w
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    simd_medians!(
        "avx512f",
        16,
        median5_row_avx512,
        median5_rows2_avx512,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_min_ps,
        _mm512_max_ps
    );
    simd_medians!(
        "avx2",
        8,
        median5_row_avx2,
        median5_rows2_avx2,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_min_ps,
        _mm256_max_ps
    );
}

/// Median of 25 values (scalar network).
#[inline(always)]
fn med25_scalar(p: &mut [f32; 25]) -> f32 {
    med25_net!(
        p,
        |a: f32, b: f32| if b < a { b } else { a },
        |a: f32, b: f32| if b < a { a } else { b }
    );
    p[12]
}

fn median5_row(rows: &[&[f32]; 5], out: &mut [f32]) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    {
        if crate::cpu::has_avx512() {
            // SAFETY: the CPU supports AVX-512F (checked at run time).
            done = unsafe { simd::median5_row_avx512(rows, out) };
        } else if crate::cpu::has_avx2() {
            // SAFETY: the CPU supports AVX2 (checked at run time).
            done = unsafe { simd::median5_row_avx2(rows, out) };
        }
    }
    for (x, o) in out.iter_mut().enumerate().skip(done) {
        let mut p = [0f32; 25];
        for i in 0..5 {
            p[i * 5..i * 5 + 5].copy_from_slice(&rows[i][x..x + 5]);
        }
        *o = med25_scalar(&mut p);
    }
}

/// The medians of two rows at once: `out0` of the window `rows[0..5]`, `out1` of
/// `rows[1..6]`.
fn median5_rows2(rows: &[&[f32]; 6], out0: &mut [f32], out1: &mut [f32]) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    {
        if crate::cpu::has_avx512() {
            // SAFETY: the CPU supports AVX-512F (checked at run time).
            done = unsafe { simd::median5_rows2_avx512(rows, out0, out1) };
        } else if crate::cpu::has_avx2() {
            // SAFETY: the CPU supports AVX2 (checked at run time).
            done = unsafe { simd::median5_rows2_avx2(rows, out0, out1) };
        }
    }
    if done < out0.len() {
        let (a, b): ([&[f32]; 5], [&[f32]; 5]) = (
            std::array::from_fn(|i| rows[i]),
            std::array::from_fn(|i| rows[i + 1]),
        );
        for (x, o) in out0.iter_mut().enumerate().skip(done) {
            *o = med25_at(&a, x);
        }
        for (x, o) in out1.iter_mut().enumerate().skip(done) {
            *o = med25_at(&b, x);
        }
    }
}

/// The scalar 5x5 median at `x` of five padded rows.
fn med25_at(rows: &[&[f32]; 5], x: usize) -> f32 {
    let mut p = [0f32; 25];
    for i in 0..5 {
        p[i * 5..i * 5 + 5].copy_from_slice(&rows[i][x..x + 5]);
    }
    med25_scalar(&mut p)
}

/// Filters rows `y0..y1` of `src` (`w` x `h`) into `dst` (those rows only).
/// `pad` is scratch of at least `(w + 4) * 5` values.
pub(crate) fn median_rows(
    src: &[f32],
    w: usize,
    h: usize,
    k: usize,
    y0: usize,
    y1: usize,
    dst: &mut [f32],
    pad: &mut Vec<f32>,
) {
    let r = k / 2;
    let pw = w + 2 * r;
    pad.clear();
    pad.resize(pw * k, 0.0);
    for y in y0..y1 {
        // Gather the k rows around y with replicated borders, padded in x.
        for i in 0..k {
            let sy = (y as isize + i as isize - r as isize).clamp(0, h as isize - 1) as usize;
            let s = &src[sy * w..(sy + 1) * w];
            let p = &mut pad[i * pw..(i + 1) * pw];
            p[r..r + w].copy_from_slice(s);
            for j in 0..r {
                p[j] = s[0];
                p[r + w + j] = s[w - 1];
            }
        }
        let out = &mut dst[(y - y0) * w..(y - y0 + 1) * w];
        if k == 5 {
            let rows: [&[f32]; 5] = std::array::from_fn(|i| &pad[i * pw..(i + 1) * pw]);
            median5_row(&rows, out);
        } else {
            let rows: [&[f32]; 3] = std::array::from_fn(|i| &pad[i * pw..(i + 1) * pw]);
            for (x, o) in out.iter_mut().enumerate() {
                let mut p = [0f32; 9];
                for i in 0..3 {
                    p[i * 3..i * 3 + 3].copy_from_slice(&rows[i][x..x + 3]);
                }
                *o = med9(&mut p);
            }
        }
    }
}

/// Filters `u` (`w` x `h`) in place. Each source row is copied once, padded, into a ring
/// of `k + 1` rows (`ring`: scratch) before any output row overwrites it: row `j` is
/// loaded when the output rows up to `j - k/2` are computed and is last read by output
/// row `j + k/2`, and output rows go by two (5x5: the pair shares four window rows), so
/// the ring's slot `j % (k + 1)` is free again when row `j + k + 1` arrives.
pub(crate) fn median_in_place(u: &mut [f32], w: usize, h: usize, k: usize, ring: &mut Vec<f32>) {
    let r = k / 2;
    let pw = w + 2 * r;
    let slots = k + 1;
    ring.resize(pw * slots, 0.0);
    let load = |ring: &mut [f32], u: &[f32], j: usize| {
        let s = &u[j * w..(j + 1) * w];
        let p = &mut ring[(j % slots) * pw..(j % slots + 1) * pw];
        p[r..r + w].copy_from_slice(s);
        for i in 0..r {
            p[i] = s[0];
            p[r + w + i] = s[w - 1];
        }
    };
    // The ring offset of window row `i` (0..) of output row `y`, replicating the borders.
    let slot = |y: usize, i: usize| {
        let j = (y + i).saturating_sub(r).min(h - 1);
        (j % slots) * pw
    };
    let mut loaded = 0; // rows 0..loaded are (or were) in the ring
    let mut y = 0;
    while y < h {
        let pair = k == 5 && y + 1 < h;
        let last = (y + usize::from(pair) + r).min(h - 1);
        while loaded <= last {
            load(ring, u, loaded);
            loaded += 1;
        }
        if pair {
            let rows: [&[f32]; 6] = std::array::from_fn(|i| &ring[slot(y, i)..slot(y, i) + pw]);
            let (a, b) = u[y * w..(y + 2) * w].split_at_mut(w);
            median5_rows2(&rows, a, b);
            y += 2;
            continue;
        }
        let out = &mut u[y * w..(y + 1) * w];
        if k == 5 {
            let rows: [&[f32]; 5] = std::array::from_fn(|i| &ring[slot(y, i)..slot(y, i) + pw]);
            median5_row(&rows, out);
        } else {
            let rows: [&[f32]; 3] = std::array::from_fn(|i| &ring[slot(y, i)..slot(y, i) + pw]);
            for (x, o) in out.iter_mut().enumerate() {
                let mut p = [0f32; 9];
                for i in 0..3 {
                    p[i * 3..i * 3 + 3].copy_from_slice(&rows[i][x..x + 3]);
                }
                *o = med9(&mut p);
            }
        }
        y += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 10.0 - 5.0
    }

    fn sorted_median(v: &[f32]) -> f32 {
        let mut s = v.to_vec();
        s.sort_by(f32::total_cmp);
        s[s.len() / 2]
    }

    #[test]
    fn networks_select_the_median() {
        let mut seed = 7;
        for trial in 0..20000 {
            // Include ties: quantise some trials.
            let q = if trial % 3 == 0 { 1.0 } else { 1000.0 };
            let v: Vec<f32> = (0..25).map(|_| (lcg(&mut seed) * q).round() / q).collect();
            let mut a: [f32; 25] = v.clone().try_into().unwrap();
            assert_eq!(med25_scalar(&mut a), sorted_median(&v), "{v:?}");
            let mut b: [f32; 9] = v[..9].to_vec().try_into().unwrap();
            assert_eq!(med9(&mut b), sorted_median(&v[..9]), "{:?}", &v[..9]);
        }
    }

    /// Every vector width against the scalar network on rows of awkward widths.
    #[test]
    fn vector_rows_equal_scalar() {
        let mut seed = 11;
        for w in [8usize, 15, 16, 17, 31, 46, 58, 112] {
            let rows_v: Vec<Vec<f32>> = (0..5)
                .map(|_| (0..w + 4).map(|_| lcg(&mut seed)).collect())
                .collect();
            let rows: [&[f32]; 5] = std::array::from_fn(|i| &rows_v[i][..]);
            let expect: Vec<f32> = (0..w)
                .map(|x| {
                    let mut p = [0f32; 25];
                    for i in 0..5 {
                        p[i * 5..i * 5 + 5].copy_from_slice(&rows[i][x..x + 5]);
                    }
                    med25_scalar(&mut p)
                })
                .collect();
            #[cfg(target_arch = "x86_64")]
            {
                let mut out = vec![0f32; w];
                if is_x86_feature_detected!("avx512f") {
                    // SAFETY: checked above.
                    let done = unsafe { simd::median5_row_avx512(&rows, &mut out) };
                    assert_eq!(&out[..done], &expect[..done], "avx512 w={w}");
                }
                if is_x86_feature_detected!("avx2") {
                    // SAFETY: checked above.
                    let done = unsafe { simd::median5_row_avx2(&rows, &mut out) };
                    assert_eq!(&out[..done], &expect[..done], "avx2 w={w}");
                }
            }
            let mut out = vec![0f32; w];
            median5_row(&rows, &mut out);
            assert_eq!(out, expect, "dispatch w={w}");
        }
    }

    /// The two-row networks against the scalar 99-comparator one, every vector width and
    /// the scalar tail, on rows of awkward widths with ties.
    #[test]
    fn two_row_medians_equal_one_row_medians() {
        let mut seed = 13;
        for w in [1usize, 7, 8, 15, 16, 17, 31, 46, 58, 112] {
            for trial in 0..40 {
                let q = if trial % 3 == 0 { 1.0 } else { 1000.0 };
                let rows_v: Vec<Vec<f32>> = (0..6)
                    .map(|_| {
                        (0..w + 4)
                            .map(|_| (lcg(&mut seed) * q).round() / q)
                            .collect()
                    })
                    .collect();
                let rows: [&[f32]; 6] = std::array::from_fn(|i| &rows_v[i][..]);
                let expect = |off: usize| -> Vec<f32> {
                    let r5: [&[f32]; 5] = std::array::from_fn(|i| rows[i + off]);
                    (0..w).map(|x| med25_at(&r5, x)).collect()
                };
                let (e0, e1) = (expect(0), expect(1));
                let (mut o0, mut o1) = (vec![0f32; w], vec![0f32; w]);
                median5_rows2(&rows, &mut o0, &mut o1);
                assert_eq!((&o0, &o1), (&e0, &e1), "dispatch w={w}");
                #[cfg(target_arch = "x86_64")]
                {
                    if is_x86_feature_detected!("avx512f") {
                        let (mut o0, mut o1) = (vec![0f32; w], vec![0f32; w]);
                        // SAFETY: checked above.
                        let d = unsafe { simd::median5_rows2_avx512(&rows, &mut o0, &mut o1) };
                        assert_eq!((&o0[..d], &o1[..d]), (&e0[..d], &e1[..d]), "avx512 w={w}");
                    }
                    if is_x86_feature_detected!("avx2") {
                        let (mut o0, mut o1) = (vec![0f32; w], vec![0f32; w]);
                        // SAFETY: checked above.
                        let d = unsafe { simd::median5_rows2_avx2(&rows, &mut o0, &mut o1) };
                        assert_eq!((&o0[..d], &o1[..d]), (&e0[..d], &e1[..d]), "avx2 w={w}");
                    }
                }
            }
        }
    }

    #[test]
    fn in_place_equals_copying() {
        let mut seed = 5;
        for (w, h, k) in [
            (37, 5, 5),
            (16, 16, 5),
            (9, 23, 3),
            (20, 2, 5),
            (1, 7, 5),
            (8, 1, 3),
        ] {
            let src: Vec<f32> = (0..w * h).map(|_| lcg(&mut seed)).collect();
            let mut expect = vec![0.0; w * h];
            median_rows(&src, w, h, k, 0, h, &mut expect, &mut Vec::new());
            let mut got = src.clone();
            median_in_place(&mut got, w, h, k, &mut Vec::new());
            assert_eq!(got, expect, "{w}x{h} k={k}");
        }
    }

    #[test]
    fn borders_replicate() {
        let (w, h) = (37, 5);
        let mut seed = 3;
        let src: Vec<f32> = (0..w * h).map(|_| lcg(&mut seed)).collect();
        let mut dst = vec![0.0; w * h];
        let mut pad = Vec::new();
        median_rows(&src, w, h, 5, 0, h, &mut dst, &mut pad);
        for y in 0..h {
            for x in 0..w {
                let mut win = Vec::new();
                for dy in -2i32..=2 {
                    for dx in -2i32..=2 {
                        let yy = (y as i32 + dy).clamp(0, h as i32 - 1) as usize;
                        let xx = (x as i32 + dx).clamp(0, w as i32 - 1) as usize;
                        win.push(src[yy * w + xx]);
                    }
                }
                assert_eq!(dst[y * w + x], sorted_median(&win));
            }
        }
    }
}
