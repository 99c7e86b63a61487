//! A user's own clip: numbered frame files, the face box, and the onset -> apex features
//! of the reference pipeline (colour read, optional face crop, bicubic resize, gray, TV-L1,
//! strain), as `cargo xtask predict --onset/--apex/--frames` uses them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mer_flow::strain::{optical_strain, StrainFormula};
use mer_flow::{GrayImage, TvL1, TvL1Params};
use opencv::core::{MatTraitConst, Rect};

use crate::features::SampleFeatures;
use crate::preprocess::{crop, read_color, to_gray, FaceCropper};
use crate::{Error, Result};

/// A face box in a frame's pixels: `[x, y, width, height]`.
pub type FaceBox = [i32; 4];

/// The frames of a folder by number: every image file whose name ends in a number before
/// the extension (`img12.jpg`, `reg_image076518.bmp`, `0003.png`), the number parsed (never
/// a fixed width), in natural order. Two files with one number are an error naming both.
pub fn numbered_frames(dir: &Path) -> Result<BTreeMap<u32, PathBuf>> {
    let mut out: BTreeMap<u32, PathBuf> = BTreeMap::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = e.map_err(|e| Error::io(dir, e))?.path();
        let (Some(stem), Some(ext)) = (
            p.file_stem().and_then(|s| s.to_str()),
            p.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        if !crate::index::is_image_ext(ext) {
            continue;
        }
        let digits: String = stem
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_digit())
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let Ok(n) = digits.parse::<u32>() else {
            continue;
        };
        if let Some(other) = out.insert(n, p.clone()) {
            return Err(Error::Invalid(format!(
                "{}: frames {} and {} both have the number {n}",
                dir.display(),
                other.display(),
                p.display()
            )));
        }
    }
    Ok(out)
}

/// The face in a frame (the largest the Haar cascade finds, with its margin), or an error
/// naming the frame when there is none.
pub fn detect_face(frame: &Path, cascade: &Path) -> Result<FaceBox> {
    let mut fc = FaceCropper::new(cascade)?;
    let m = read_color(frame)?;
    match fc.detect(&m)? {
        Some(r) => Ok([r.x, r.y, r.width, r.height]),
        None => Err(Error::image(
            frame,
            format!(
                "no face found by the Haar cascade in this {}x{} frame; if the frames are already face crops (as in the databases), use --face none",
                m.cols(),
                m.rows()
            ),
        )),
    }
}

/// A frame as the model's preprocessing sees it: colour read, the face box cut out (if
/// given), bicubic resize to `size` x `size`, gray.
pub fn gray_of(frame: &Path, size: usize, face: Option<FaceBox>) -> Result<Vec<u8>> {
    let m = read_color(frame)?;
    let img = |e: Error| match e {
        Error::OpenCv { context, error } => Error::image(frame, format!("{context}: {error}")),
        e => e,
    };
    match face {
        None => to_gray(&m, size).map_err(img),
        Some([x, y, w, h]) => {
            if x < 0 || y < 0 || x + w > m.cols() || y + h > m.rows() {
                return Err(Error::image(
                    frame,
                    format!(
                        "the face box [{x}, {y}, {w}, {h}] (from the onset frame) is outside this {}x{} frame",
                        m.cols(),
                        m.rows()
                    ),
                ));
            }
            crop(&m, Rect::new(x, y, w, h))
                .and_then(|c| to_gray(&c, size))
                .map_err(img)
        }
    }
}

/// The onset -> apex features of two frames at `size`: TV-L1 flow (OpenCV's defaults) and
/// strain by `formula`, the same box cut from both frames.
pub fn pair_features(
    onset: &Path,
    apex: &Path,
    size: usize,
    formula: StrainFormula,
    face: Option<FaceBox>,
) -> Result<SampleFeatures> {
    let g0 = gray_of(onset, size, face)?;
    let g1 = gray_of(apex, size, face)?;
    let flow_err = |error: mer_flow::Error| Error::Flow {
        context: format!("flow of {} -> {}", onset.display(), apex.display()),
        error,
    };
    let tvl1 = TvL1::new(TvL1Params::default()).map_err(flow_err)?;
    let i0 = GrayImage::from_u8(size, size, &g0).map_err(flow_err)?;
    let i1 = GrayImage::from_u8(size, size, &g1).map_err(flow_err)?;
    let flow = tvl1.compute(&i0, &i1).map_err(flow_err)?;
    let strain = optical_strain(&flow, formula);
    let mut uv = flow.u();
    uv.extend(flow.v());
    let mut frames = g0;
    frames.extend(g1);
    Ok(SampleFeatures {
        size,
        flow: uv,
        strain,
        frames,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_frames_parse_the_number_and_refuse_duplicates() {
        let d = tempfile::tempdir().unwrap();
        for n in [
            "img9.jpg",
            "img10.jpg",
            "img011.jpg",
            "notes.txt",
            "cover.jpg",
        ] {
            std::fs::write(d.path().join(n), b"x").unwrap();
        }
        let f = numbered_frames(d.path()).unwrap();
        assert_eq!(f.keys().copied().collect::<Vec<_>>(), vec![9, 10, 11]);
        std::fs::write(d.path().join("img9.png"), b"x").unwrap();
        let e = numbered_frames(d.path()).unwrap_err().to_string();
        assert!(e.contains("both have the number 9"), "{e}");
    }
}
