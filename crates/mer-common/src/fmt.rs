//! Numbers written for people.

/// `n` with a comma every three digits: `2664475` -> `2,664,475`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(59403), "59,403");
        assert_eq!(super::thousands(2_664_475), "2,664,475");
        assert_eq!(super::thousands(1_002_482_688), "1,002,482,688");
    }
}
