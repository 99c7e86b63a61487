//! Middlebury `.flo` read/write and NumPy `.npy` write (f32, C order), through the
//! workspace's shared helpers ([`mer_common::fs`], [`mer_common::npy`]): every write is
//! atomic, so a file is whole or absent.

use crate::image::Flow;
use crate::{Error, Result};
use std::path::Path;

use mer_common::fs::write_atomic;

const FLO_MAGIC: f32 = 202021.25;

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
    Ok(write_atomic(path, &flo_bytes(flow))?)
}

/// Reads a Middlebury `.flo` file.
pub fn read_flo(path: &Path) -> Result<Flow> {
    let b = std::fs::read(path).map_err(|e| mer_common::Error::io(path, e))?;
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

/// Writes f32 values with a shape as `.npy` ([`mer_common::npy::write_f32`]).
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    Ok(mer_common::npy::write_f32(path, shape, data)?)
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
}
