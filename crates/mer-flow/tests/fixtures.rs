//! `fixtures/flow/opencv.flo`, written by Python's OpenCV (`cv2.writeOpticalFlow`, see
//! `fixtures/regenerate.py` and `fixtures/VERSIONS.md`), read and written back with
//! `mer_flow::io`. The fixture is in the repository: these tests never skip.

use mer_flow::io::{flo_bytes, read_flo, write_flo};
use mer_flow::Flow;
use std::path::{Path, PathBuf};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures");
const W: usize = 7;
const H: usize = 5;

fn opencv_flo() -> PathBuf {
    Path::new(FIXTURES).join("flow/opencv.flo")
}

/// The field of `regenerate.py`, computed in f64 and rounded to f32 as numpy's
/// `astype(np.float32)` does (round to nearest even):
/// u = 0.25 x - 0.5 y + 0.125 (exact), v = x y / 3 - 1.5 (rounded).
fn formula(x: usize, y: usize) -> (f32, f32) {
    let (xf, yf) = (x as f64, y as f64);
    let u = 0.25 * xf - 0.5 * yf + 0.125;
    let v = (x * y) as f64 / 3.0 - 1.5;
    (u as f32, v as f32)
}

fn formula_flow() -> Flow {
    let data = (0..H)
        .flat_map(|y| (0..W).flat_map(move |x| <[f32; 2]>::from(formula(x, y))))
        .collect();
    Flow::new(W, H, data).unwrap()
}

#[test]
fn reads_the_opencv_flo_bit_for_bit() {
    let f = read_flo(&opencv_flo()).unwrap();
    assert_eq!((f.width(), f.height()), (W, H));
    for y in 0..H {
        for x in 0..W {
            let (u, v) = f.get(x, y);
            let (eu, ev) = formula(x, y);
            assert_eq!(u.to_bits(), eu.to_bits(), "u at ({x},{y}): {u} vs {eu}");
            assert_eq!(v.to_bits(), ev.to_bits(), "v at ({x},{y}): {v} vs {ev}");
            // interleaved, row-major, as the file
            assert_eq!(f.data()[2 * (y * W + x)].to_bits(), eu.to_bits());
            assert_eq!(f.data()[2 * (y * W + x) + 1].to_bits(), ev.to_bits());
        }
    }
    // The rounded component really is rounded (not an exact binary fraction) somewhere,
    // so bit equality says more than value equality of simple numbers.
    let (_, v) = formula(1, 1);
    assert_ne!(v as f64, 1.0 / 3.0 - 1.5);
    assert_eq!(f, formula_flow());
}

#[test]
fn write_flo_gives_opencv_bytes() {
    let theirs = std::fs::read(opencv_flo()).unwrap();
    assert_eq!(theirs.len(), 12 + 4 * 2 * W * H);
    assert_eq!(&theirs[..4], b"PIEH");
    // From the formula, not from the file: an independent encoding of the same field.
    let flow = formula_flow();
    assert_eq!(flo_bytes(&flow), theirs);
    let dir = std::env::temp_dir().join(format!("mer-flow-fixtures-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ours.flo");
    write_flo(&path, &flow).unwrap();
    let ours = std::fs::read(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        ours, theirs,
        "write_flo bytes differ from cv2.writeOpticalFlow's"
    );
    // and the round trip of OpenCV's file
    assert_eq!(flo_bytes(&read_flo(&opencv_flo()).unwrap()), theirs);
}
