//! A user's own clip: numbered frame files or a video, the face box, and the onset -> apex
//! features of the reference pipeline (colour read, optional face crop, bicubic resize,
//! gray, TV-L1, strain), as `cargo xtask predict --onset/--apex/--frames/--video` uses them.
//!
//! ```no_run
//! use mer_data::clip::{detect_face, pair_features};
//! use mer_flow::strain::StrainFormula;
//! use std::path::Path;
//! # fn main() -> mer_data::Result<()> {
//! let (onset, apex) = (Path::new("clip/img01.jpg"), Path::new("clip/img12.jpg"));
//! let face = detect_face(onset, Path::new(mer_data::preprocess::DEFAULT_CASCADE))?;
//! let f = pair_features(onset, apex, 112, StrainFormula::Paper, Some(face))?;
//! assert_eq!(f.flow.len(), 2 * 112 * 112);
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mer_flow::strain::{optical_strain, StrainFormula};
use mer_flow::{GrayImage, TvL1, TvL1Params};
use opencv::core::{Mat, MatTraitConst, Rect};
use opencv::videoio::{VideoCapture, VideoCaptureTrait, VideoCaptureTraitConst};

use crate::features::SampleFeatures;
use crate::preprocess::{crop, opencv_path, read_color, to_gray, FaceCropper};
use crate::{Error, Result};

/// A face box in a frame's pixels: `[x, y, width, height]`.
pub type FaceBox = [i32; 4];

/// How the face is found in a clip.
#[derive(Clone, Copy, Debug)]
pub enum FaceMode<'a> {
    /// The frames are face crops already (as in the databases): take them whole.
    None,
    /// Detect the face in the onset frame with this Haar cascade and cut the same box from
    /// every frame.
    Auto(&'a Path),
}

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

/// The face in a frame file: see [`detect_face_in`].
pub fn detect_face(frame: &Path, cascade: &Path) -> Result<FaceBox> {
    detect_face_in(&read_color(frame)?, frame, cascade)
}

/// The face in a decoded frame (`what` names it in errors): the largest face the Haar
/// cascade finds, grown by the cropper's margin and made square (the side is the larger of
/// the two, shifted to lie inside the frame, and shrunk to the frame's shorter side if it
/// cannot), or an error naming the frame when there is none.
pub fn detect_face_in(m: &Mat, what: &Path, cascade: &Path) -> Result<FaceBox> {
    let mut fc = FaceCropper::new(cascade)?;
    match fc.detect(m)? {
        Some(r) => Ok(square_box(r, m.cols(), m.rows())),
        None => Err(Error::image(
            what,
            format!(
                "no face found by the Haar cascade in this {}x{} frame; if the frames are already face crops (as in the databases), use --face none",
                m.cols(),
                m.rows()
            ),
        )),
    }
}

/// `r` made square around its centre and kept inside a `cols` x `rows` frame.
fn square_box(r: Rect, cols: i32, rows: i32) -> FaceBox {
    let side = r.width.max(r.height).min(cols).min(rows);
    let place = |start: i32, len: i32, limit: i32| {
        let centre2 = 2 * start + len; // twice the centre, to stay in integers
        ((centre2 - side) / 2).clamp(0, limit - side)
    };
    [
        place(r.x, r.width, cols),
        place(r.y, r.height, rows),
        side,
        side,
    ]
}

/// A frame file as the model's preprocessing sees it: see [`gray_of_mat`].
pub fn gray_of(frame: &Path, size: usize, face: Option<FaceBox>) -> Result<Vec<u8>> {
    gray_of_mat(&read_color(frame)?, frame, size, face)
}

/// A decoded BGR frame (`what` names it in errors) as the model's preprocessing sees it: the
/// face box cut out (if given), bicubic resize to `size` x `size`, gray.
pub fn gray_of_mat(m: &Mat, what: &Path, size: usize, face: Option<FaceBox>) -> Result<Vec<u8>> {
    let img = |e: Error| match e {
        Error::OpenCv { context, error } => Error::image(what, format!("{context}: {error}")),
        e => e,
    };
    match face {
        None => to_gray(m, size).map_err(img),
        Some([x, y, w, h]) => {
            if x < 0 || y < 0 || x + w > m.cols() || y + h > m.rows() {
                return Err(Error::image(
                    what,
                    format!(
                        "the face box [{x}, {y}, {w}, {h}] (from the onset frame) is outside this {}x{} frame",
                        m.cols(),
                        m.rows()
                    ),
                ));
            }
            crop(m, Rect::new(x, y, w, h))
                .and_then(|c| to_gray(&c, size))
                .map_err(img)
        }
    }
}

/// The onset -> apex features of two frame files at `size`: TV-L1 flow (OpenCV's defaults)
/// and strain by `formula`, the same box cut from both frames.
pub fn pair_features(
    onset: &Path,
    apex: &Path,
    size: usize,
    formula: StrainFormula,
    face: Option<FaceBox>,
) -> Result<SampleFeatures> {
    let g0 = gray_of(onset, size, face)?;
    let g1 = gray_of(apex, size, face)?;
    let what = format!("flow of {} -> {}", onset.display(), apex.display());
    features_of_grays(g0, g1, size, formula, &what)
}

/// The onset -> apex features of two preprocessed gray frames (`size` x `size` bytes each);
/// `what` names the pair in errors.
pub fn features_of_grays(
    g0: Vec<u8>,
    g1: Vec<u8>,
    size: usize,
    formula: StrainFormula,
    what: &str,
) -> Result<SampleFeatures> {
    let flow_err = |error: mer_flow::Error| Error::Flow {
        context: what.to_string(),
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

/// Frames of a video, preprocessed: what [`read_video`] returns.
#[derive(Clone, Debug)]
pub struct VideoFrames {
    /// The face box found in the onset frame (with [`FaceMode::Auto`]).
    pub face: Option<FaceBox>,
    /// The kept frames `(index from 0, gray size x size)`, in order; the onset first.
    pub frames: Vec<(u32, Vec<u8>)>,
    /// The frame size `(width, height)`.
    pub frame_size: (i32, i32),
}

/// The name of frame `n` of a video in errors: `VIDEO (frame n)`.
pub fn video_frame_name(video: &Path, n: u32) -> PathBuf {
    PathBuf::from(format!("{} (frame {n})", video.display()))
}

/// Reads a video with OpenCV's videoio, frames indexed from 0: the onset frame (where the
/// face is detected) and every later frame up to `last` (the end of the video when `None`)
/// for which `keep` says so, each preprocessed at once (face box, bicubic `size`, gray), so a
/// long clip never sits in memory decoded. A video that cannot be opened, or that ends before
/// the onset or before `last`, is an error naming the video and its number of frames.
pub fn read_video(
    video: &Path,
    onset: u32,
    last: Option<u32>,
    keep: &dyn Fn(u32) -> bool,
    size: usize,
    face: FaceMode,
) -> Result<VideoFrames> {
    let name = opencv_path(video, "no such video file")?;
    let cannot = |why: String| {
        Error::image(
            video,
            format!("cannot be read as a video by OpenCV's videoio ({why})"),
        )
    };
    let mut cap = VideoCapture::from_file_def(name).map_err(|e| cannot(e.to_string()))?;
    if !cap.is_opened().map_err(|e| cannot(e.to_string()))? {
        return Err(cannot("no backend opens it".into()));
    }
    if let Some(l) = last {
        if l < onset {
            return Err(Error::Invalid(format!(
                "{}: the last frame wanted ({l}) is before the onset frame {onset}",
                video.display()
            )));
        }
    }
    let mut out = VideoFrames {
        face: None,
        frames: Vec::new(),
        frame_size: (0, 0),
    };
    let mut m = Mat::default();
    let mut n: u32 = 0;
    loop {
        if last.is_some_and(|l| n > l) {
            break;
        }
        if n < onset {
            // Frames before the onset are only skipped over.
            if !cap.grab().map_err(|e| cannot(e.to_string()))? {
                break;
            }
            n += 1;
            continue;
        }
        if !cap.read(&mut m).map_err(|e| cannot(e.to_string()))? || m.empty() {
            break;
        }
        let what = video_frame_name(video, n);
        if n == onset {
            out.frame_size = (m.cols(), m.rows());
            out.face = match face {
                FaceMode::None => None,
                FaceMode::Auto(cascade) => Some(detect_face_in(&m, &what, cascade)?),
            };
        }
        if n == onset || keep(n) {
            out.frames
                .push((n, gray_of_mat(&m, &what, size, out.face)?));
        }
        n += 1;
    }
    let count = n;
    let ends = |wanted: u32, role: &str| {
        Error::image(
            video,
            format!(
                "has {count} frame(s) (0..{}), so the {role} frame {wanted} is past its end",
                count.saturating_sub(1)
            ),
        )
    };
    if count <= onset {
        return Err(ends(onset, "onset"));
    }
    if let Some(l) = last {
        if count <= l {
            return Err(ends(l, "last wanted"));
        }
    }
    Ok(out)
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

    #[test]
    fn face_boxes_are_square_and_inside_the_frame() {
        // Inside: squared around the centre.
        assert_eq!(
            square_box(Rect::new(10, 20, 40, 50), 200, 100),
            [5, 20, 50, 50]
        );
        // At the right and bottom edges: shifted back in.
        assert_eq!(
            square_box(Rect::new(170, 80, 30, 20), 200, 100),
            [170, 70, 30, 30]
        );
        // Wider than the frame is tall: shrunk to the shorter side, centred.
        assert_eq!(
            square_box(Rect::new(0, 0, 200, 90), 200, 100),
            [50, 0, 100, 100]
        );
        for (r, c, h) in [
            (Rect::new(3, 7, 11, 5), 20, 20),
            (Rect::new(0, 0, 9, 9), 9, 9),
        ] {
            let [x, y, w, hh] = square_box(r, c, h);
            assert!(w == hh && x >= 0 && y >= 0 && x + w <= c && y + hh <= h);
        }
    }

    /// A video written by OpenCV (MJPG in AVI, no external codec): frames indexed from 0,
    /// the onset and the kept frames returned preprocessed, and a video shorter than the
    /// onset is an error giving its length.
    #[test]
    fn reads_a_video_from_the_onset_and_names_its_length() {
        use opencv::core::{Scalar, Size, CV_8UC3};
        use opencv::videoio::{VideoWriter, VideoWriterTrait};
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("clip.avi");
        let fourcc = VideoWriter::fourcc('M', 'J', 'P', 'G').unwrap();
        let mut w =
            VideoWriter::new_def(path.to_str().unwrap(), fourcc, 25.0, Size::new(64, 48)).unwrap();
        for k in 0..6 {
            let m = Mat::new_rows_cols_with_default(48, 64, CV_8UC3, Scalar::all(40.0 * k as f64))
                .unwrap();
            w.write(&m).unwrap();
        }
        w.release().unwrap();
        let v = read_video(&path, 2, Some(4), &|n| n == 4, 16, FaceMode::None).unwrap();
        assert_eq!(v.frame_size, (64, 48));
        assert_eq!(v.frames.iter().map(|f| f.0).collect::<Vec<_>>(), vec![2, 4]);
        // Uniform frames of level 80 and 160 (JPEG keeps a flat frame flat, to a level).
        assert!(
            v.frames[0].1.iter().all(|&p| p.abs_diff(80) <= 2),
            "{:?}",
            &v.frames[0].1[..4]
        );
        assert!(v.frames[1].1.iter().all(|&p| p.abs_diff(160) <= 2));
        let all = read_video(&path, 0, None, &|_| true, 16, FaceMode::None).unwrap();
        assert_eq!(all.frames.len(), 6);
        let e = read_video(&path, 9, None, &|_| true, 16, FaceMode::None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("clip.avi") && e.contains("has 6 frame(s)") && e.contains("onset frame 9"),
            "{e}"
        );
        let e = read_video(&path, 1, Some(7), &|_| true, 16, FaceMode::None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("frame 7 is past its end"), "{e}");
        let bad = d.path().join("not-a-video.avi");
        std::fs::write(&bad, b"plain text").unwrap();
        let e = read_video(&bad, 0, None, &|_| true, 16, FaceMode::None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not-a-video.avi"), "{e}");
    }
}
