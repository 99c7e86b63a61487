//! Atomic file writes (temporary file in the same folder, then a rename) and JSON helpers.

use std::path::Path;

use serde::{de::DeserializeOwned, Serialize};

use crate::{Error, Result};

/// FNV-1a, 64 bits: a stable hash for fingerprints (data lists, configurations).
pub use mer_data::util::fnv1a64;
pub(crate) use mer_data::util::temp_beside;

/// Writes `bytes` to `path` atomically, creating the parent folders (the data crate's
/// [`mer_data::util::write_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(mer_data::util::write_atomic(path, bytes)?)
}

/// Renames a finished temporary file into place (the second half of an atomic write).
pub(crate) fn commit_temp(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(tmp);
        Error::io(path, e)
    })
}

/// `s` with every character other than ASCII letters, digits, `_` and `-` replaced by `_`
/// (a file-name-safe stem).
pub(crate) fn file_safe(s: &str) -> String {
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

/// Writes `value` as pretty JSON (with a final newline) atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut s = serde_json::to_string_pretty(value).map_err(|e| Error::json(path, e))?;
    s.push('\n');
    write_atomic(path, s.as_bytes())
}

/// Reads a JSON file.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let s = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&s).map_err(|e| Error::json(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/x.json");
        write_json(&p, &vec![1, 2, 3]).unwrap();
        write_json(&p, &vec![4]).unwrap();
        assert_eq!(read_json::<Vec<i32>>(&p).unwrap(), vec![4]);
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.json")]);
    }

    #[test]
    fn fnv_is_stable() {
        // FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    }
}
