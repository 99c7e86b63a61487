//! Names: natural order of sample and frame names, file-name-safe stems.

use std::cmp::Ordering;

/// Natural order: runs of digits compare as numbers (`EP2` < `EP10`), the rest byte by
/// byte; equal numbers with more leading zeros sort after (`sub1` < `sub01`), so the order
/// is total.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].is_ascii_digit() && b[j].is_ascii_digit() {
            let si = i;
            while i < a.len() && a[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let da = trim_zeros(&a[si..i]);
            let db = trim_zeros(&b[sj..j]);
            let ord = da
                .len()
                .cmp(&db.len())
                .then_with(|| da.cmp(db))
                .then_with(|| (i - si).cmp(&(j - sj)));
            if ord != Ordering::Equal {
                return ord;
            }
        } else {
            let ord = a[i].cmp(&b[j]);
            if ord != Ordering::Equal {
                return ord;
            }
            i += 1;
            j += 1;
        }
    }
    (a.len() - i).cmp(&(b.len() - j))
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let k = d.iter().position(|&c| c != b'0').unwrap_or(d.len());
    &d[k..]
}

/// `s` with every character other than ASCII letters, digits, `_` and `-` replaced by `_`:
/// a stem that is a valid file name everywhere (fold files, figure names).
pub fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(a: &str, b: &str, expected: Ordering) {
        assert_eq!(natural_cmp(a, b), expected, "{a} vs {b}");
        assert_eq!(natural_cmp(b, a), expected.reverse(), "{b} vs {a}");
    }

    #[test]
    fn natural_order() {
        check("EP2", "EP10", Ordering::Less);
        check("anger1_12", "anger1_4", Ordering::Greater);
        check("sub01", "sub1", Ordering::Greater);
        check("EP12_2_1", "EP12_11_1", Ordering::Less);
        check("EP11", "EP11_1", Ordering::Less);
        check("16", "16", Ordering::Equal);
        check("img9.jpg", "img10.jpg", Ordering::Less);
    }

    #[test]
    fn file_safe_stems() {
        assert_eq!(file_safe("sub01/EP02 01f"), "sub01_EP02_01f");
        assert_eq!(file_safe("casme^2_15"), "casme_2_15");
        assert_eq!(file_safe("a-b_c9"), "a-b_c9");
    }
}
