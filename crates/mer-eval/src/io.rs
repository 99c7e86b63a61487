//! JSON files, written atomically (the workspace's one rule, [`mer_common::fs`]), and the
//! shared helpers this crate uses, re-exported.

use std::path::Path;

use serde::{de::DeserializeOwned, Serialize};

use crate::{Error, Result};

pub use mer_common::fs::{write_atomic, write_atomic_with};
/// FNV-1a, 64 bits: a stable hash for fingerprints (data lists, configurations).
pub use mer_common::hash::{fnv1a64, fnv1a64_hex};
pub(crate) use mer_common::names::file_safe;

/// Writes `value` as pretty JSON (with a final newline) atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut s = serde_json::to_string_pretty(value).map_err(|e| Error::json(path, e))?;
    s.push('\n');
    Ok(write_atomic(path, s.as_bytes())?)
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
}
