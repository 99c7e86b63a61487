//! NumPy `.npy` files: read little-endian `<f4` / `<f8` (narrowed to f32) / `<i8`, C order,
//! format versions 1 to 3; write `<f4`, version 1.0, atomically.

use std::path::Path;

use crate::{fs, Error, Result};

/// The element data of an `.npy` array.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    /// `<f4` (and `<f8`, narrowed to f32).
    F32(Vec<f32>),
    /// `<i8`.
    I64(Vec<i64>),
}

/// An array read from an `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// Dimensions, C order.
    pub shape: Vec<usize>,
    /// The elements.
    pub data: NpyData,
}

impl NpyArray {
    /// The f32 elements, or an error naming `path` when the file holds integers.
    pub fn into_f32(self, path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
        match self.data {
            NpyData::F32(v) => Ok((self.shape, v)),
            NpyData::I64(_) => Err(npy_err(
                path,
                "expected float32 data ('<f4'), found int64 ('<i8')",
            )),
        }
    }
}

const MAGIC: &[u8] = b"\x93NUMPY";

fn npy_err(path: &Path, why: impl Into<String>) -> Error {
    Error::Npy {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// Reads an `.npy` file.
pub fn read(path: impl AsRef<Path>) -> Result<NpyArray> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(&bytes).map_err(|why| npy_err(path, why))
}

/// Parses the bytes of an `.npy` file; the error says what is wrong.
pub fn parse(bytes: &[u8]) -> std::result::Result<NpyArray, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not an .npy file: expected the magic \\x93NUMPY".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated header".into());
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => {
            return Err(format!(
                "unsupported .npy format version {v}: expected 1, 2 or 3"
            ))
        }
    };
    let end = start + header_len;
    let header = bytes.get(start..end).ok_or("truncated header")?;
    let header = std::str::from_utf8(header).map_err(|_| "header is not UTF-8")?;
    let descr = dict_value(header, "descr").ok_or("header lacks 'descr'")?;
    let descr = descr.trim().trim_matches(|c| c == '\'' || c == '"');
    let fortran = dict_value(header, "fortran_order").ok_or("header lacks 'fortran_order'")?;
    if fortran.trim() != "False" {
        return Err("expected C order (fortran_order False), found Fortran order".into());
    }
    let shape_s = dict_value(header, "shape").ok_or("header lacks 'shape'")?;
    let shape_s = shape_s.trim().trim_start_matches('(').trim_end_matches(')');
    let shape = shape_s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad shape entry `{s}`"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let count: usize = shape.iter().product();
    let body = &bytes[end..];
    let need = |size: usize| -> std::result::Result<&[u8], String> {
        body.get(..count * size).ok_or_else(|| {
            format!(
                "expected {} data bytes for shape {shape:?}, found {}",
                count * size,
                body.len()
            )
        })
    };
    let data = match descr {
        "<f4" => NpyData::F32(
            need(4)?
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        "<f8" => NpyData::F32(
            need(8)?
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
        ),
        "<i8" => NpyData::I64(
            need(8)?
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        d => {
            return Err(format!(
                "unsupported dtype '{d}': expected '<f4', '<f8' or '<i8'"
            ))
        }
    };
    Ok(NpyArray { shape, data })
}

/// The text after `'key':` up to the next top-level comma of a numpy header dict.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("'{key}':");
    let pos = header.find(&pat)? + pat.len();
    let rest = &header[pos..];
    let mut depth = 0i32;
    for (i, c) in rest.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(&rest[..i]),
            _ => {}
        }
    }
    None
}

/// A version 1.0 header for `descr` and `shape`, padded with spaces so that the data start
/// at a multiple of 64 bytes, ending in `\n` (numpy's own layout).
fn header_bytes(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_s = match shape.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_s}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    let total = 10 + h.len() + 1;
    h.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    h.push('\n');
    let mut out = Vec::with_capacity(10 + h.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out
}

/// The `.npy` (version 1.0, `<f4`) encoding of `data` with `shape`; `None` when the shape
/// does not hold exactly `data.len()` values.
pub fn f32_bytes(shape: &[usize], data: &[f32]) -> Option<Vec<u8>> {
    if shape.iter().product::<usize>() != data.len() {
        return None;
    }
    let mut out = header_bytes("<f4", shape);
    out.reserve(data.len() * 4);
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Some(out)
}

/// Writes f32 `data` of `shape` as a version 1.0 `.npy` file, atomically.
pub fn write_f32(path: impl AsRef<Path>, shape: &[usize], data: &[f32]) -> Result<()> {
    let path = path.as_ref();
    let bytes = f32_bytes(shape, data).ok_or_else(|| {
        npy_err(
            path,
            format!(
                "shape {shape:?} holds {} elements, found {} values",
                shape.iter().product::<usize>(),
                data.len()
            ),
        )
    })?;
    fs::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(shape: &[usize]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("a{}.npy", shape.len()));
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 1.0).collect();
        write_f32(&path, shape, &data).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let header_end = 10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!(header_end % 64, 0, "header padded to 64 bytes");
        assert_eq!(bytes[header_end - 1], b'\n');
        let arr = read(&path).unwrap();
        assert_eq!(arr.shape, shape);
        assert_eq!(arr.data, NpyData::F32(data));
    }

    #[test]
    fn round_trips() {
        for shape in [&[][..], &[5], &[2, 3], &[4, 1, 3, 2]] {
            check(shape);
        }
    }

    #[test]
    fn header_is_numpys() {
        let b = f32_bytes(&[2, 3, 2], &[0.0; 12]).unwrap();
        let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
        let h = std::str::from_utf8(&b[10..10 + hl]).unwrap();
        assert!(h.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 2), }"));
        assert_eq!(b.len(), 10 + hl + 48);
        assert!(f32_bytes(&[2, 2], &[0.0; 3]).is_none());
    }

    #[test]
    fn parses_int64_and_rejects_bad_input() {
        let mut bytes = header_bytes("<i8", &[2]);
        bytes.extend_from_slice(&7i64.to_le_bytes());
        bytes.extend_from_slice(&(-3i64).to_le_bytes());
        assert_eq!(parse(&bytes).unwrap().data, NpyData::I64(vec![7, -3]));
        for (bytes, needle) in [
            (b"hello world".to_vec(), "magic"),
            (header_bytes("<u2", &[1]), "unsupported dtype '<u2'"),
            (header_bytes("<f4", &[3]), "expected 12 data bytes"),
        ] {
            let err = parse(&bytes).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.npy");
        let e = write_f32(&p, &[2, 2], &[1.0]).unwrap_err().to_string();
        assert!(
            e.contains("bad.npy") && e.contains("holds 4 elements"),
            "{e}"
        );
        assert!(!p.exists());
    }
}
