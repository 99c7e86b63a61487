//! Middlebury `.flo` read/write and NumPy `.npy` write (f32, C order).
//! Writes go to a temporary file renamed into place, so a file is whole or absent.

use crate::image::Flow;
use crate::{Error, Result};
use std::io::Write;
use std::path::Path;

const FLO_MAGIC: f32 = 202021.25;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically (temporary file in the same folder, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| Error::Format {
        path: path.to_path_buf(),
        why: "not a file path".into(),
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// The `.flo` encoding of a flow: magic 202021.25, width, height (i32), then
/// interleaved (u, v) f32, all little-endian.
pub fn flo_bytes(flow: &Flow) -> Vec<u8> {
    let mut b = Vec::with_capacity(12 + 4 * flow.data().len());
    b.extend_from_slice(&FLO_MAGIC.to_le_bytes());
    b.extend_from_slice(&(flow.width() as i32).to_le_bytes());
    b.extend_from_slice(&(flow.height() as i32).to_le_bytes());
    for v in flow.data() {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

/// Writes a Middlebury `.flo` file.
pub fn write_flo(path: &Path, flow: &Flow) -> Result<()> {
    write_atomic(path, &flo_bytes(flow))
}

/// Reads a Middlebury `.flo` file.
pub fn read_flo(path: &Path) -> Result<Flow> {
    let b = std::fs::read(path).map_err(io_err(path))?;
    let bad = |why: String| Error::Format {
        path: path.to_path_buf(),
        why,
    };
    if b.len() < 12 {
        return Err(bad(format!(
            "too short for a .flo header: {} bytes",
            b.len()
        )));
    }
    let word = |i: usize| [b[i], b[i + 1], b[i + 2], b[i + 3]];
    let magic = f32::from_le_bytes(word(0));
    if magic != FLO_MAGIC {
        return Err(bad(format!("bad .flo magic {magic}, expected {FLO_MAGIC}")));
    }
    let (w, h) = (i32::from_le_bytes(word(4)), i32::from_le_bytes(word(8)));
    if w <= 0 || h <= 0 || w > 1 << 15 || h > 1 << 15 {
        return Err(bad(format!("bad .flo size {w}x{h}")));
    }
    let n = 2 * w as usize * h as usize;
    if b.len() != 12 + 4 * n {
        return Err(bad(format!(
            "expected {} bytes for {w}x{h}, found {}",
            12 + 4 * n,
            b.len()
        )));
    }
    let data = (0..n)
        .map(|k| f32::from_le_bytes(word(12 + 4 * k)))
        .collect();
    Flow::new(w as usize, h as usize, data)
}

/// The `.npy` (version 1.0) encoding of little-endian f32 values with a shape.
pub fn npy_bytes(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_s = if shape.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_s}, }}");
    // Pad so that magic (6) + version (2) + length (2) + header is a multiple of 64, ending in '\n'.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    header.push('\n');
    let mut b = Vec::with_capacity(10 + header.len() + 4 * data.len());
    b.extend_from_slice(b"\x93NUMPY\x01\x00");
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    for v in data {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

/// Writes f32 values with a shape as `.npy`.
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let n: usize = shape.iter().product();
    if n != data.len() {
        return Err(Error::Format {
            path: path.to_path_buf(),
            why: format!("shape {shape:?} needs {n} values, found {}", data.len()),
        });
    }
    write_atomic(path, &npy_bytes(shape, data))
}

/// Writes a flow as `.npy` of shape `[H, W, 2]`.
pub fn write_flow_npy(path: &Path, flow: &Flow) -> Result<()> {
    write_npy(path, &[flow.height(), flow.width(), 2], flow.data())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flo_round_trip_and_errors() {
        let dir = std::env::temp_dir().join(format!("mer-flow-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = Flow::new(3, 2, (0..12).map(|i| i as f32 * 0.25 - 1.0).collect()).unwrap();
        let p = dir.join("a.flo");
        write_flo(&p, &f).unwrap();
        assert_eq!(read_flo(&p).unwrap(), f);
        std::fs::write(&p, &flo_bytes(&f)[..20]).unwrap();
        let e = read_flo(&p).unwrap_err().to_string();
        assert!(
            e.contains("a.flo") && e.contains("expected 60 bytes"),
            "{e}"
        );
        std::fs::write(&p, [0u8; 16]).unwrap();
        assert!(read_flo(&p).unwrap_err().to_string().contains("magic"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn npy_header_is_aligned() {
        let b = npy_bytes(&[2, 3, 2], &[0.0; 12]);
        let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hl) % 64, 0);
        let h = std::str::from_utf8(&b[10..10 + hl]).unwrap();
        assert!(h.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 2), }"));
        assert!(h.ends_with('\n'));
        assert_eq!(b.len(), 10 + hl + 48);
    }
}
