//! Frame preprocessing through OpenCV, exactly as the reference: colour read, bicubic
//! resize to 112x112, then `COLOR_BGR2GRAY` (resize before the gray conversion).
//! Optionally a Haar-cascade face crop for frames that are not pre-cropped.

use crate::{Error, Result};
use opencv::core::{Mat, MatTraitConst, MatTraitConstManual, Rect, Size, Vector};
use opencv::objdetect::{CascadeClassifier, CascadeClassifierTrait, CascadeClassifierTraitConst};
use opencv::{imgcodecs, imgproc};
use std::path::{Path, PathBuf};

/// The network's input side.
pub const FEATURE_SIZE: usize = 112;

/// Debian's (`opencv-data`) frontal-face Haar cascade.
pub const DEFAULT_CASCADE: &str =
    "/usr/share/opencv4/haarcascades/haarcascade_frontalface_default.xml";

/// `path` as the `&str` OpenCV's loaders take: an error naming it when there is no file there
/// (`missing` says what was expected) or when it is not UTF-8.
pub(crate) fn opencv_path<'a>(path: &'a Path, missing: &str) -> Result<&'a str> {
    if !path.is_file() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, missing.to_string()),
        ));
    }
    path.to_str()
        .ok_or_else(|| Error::image(path, "path is not UTF-8"))
}

/// Reads an image as 3-channel BGR (`IMREAD_COLOR`).
pub fn read_color(path: &Path) -> Result<Mat> {
    let name = opencv_path(path, "no such image file")?;
    let m = imgcodecs::imread(name, imgcodecs::IMREAD_COLOR)
        .map_err(|e| Error::image(path, e.to_string()))?;
    if m.empty() {
        return Err(Error::image(
            path,
            "cannot be decoded (not an image OpenCV reads, or truncated)",
        ));
    }
    Ok(m)
}

/// Bicubic resize of a BGR image to `size`x`size`, then BGR to 8-bit gray: row-major bytes.
pub fn to_gray(bgr: &Mat, size: usize) -> Result<Vec<u8>> {
    let mut resized = Mat::default();
    let s = size as i32;
    imgproc::resize(
        bgr,
        &mut resized,
        Size::new(s, s),
        0.0,
        0.0,
        imgproc::INTER_CUBIC,
    )
    .map_err(Error::cv("resize"))?;
    let mut gray = Mat::default();
    imgproc::cvt_color_def(&resized, &mut gray, imgproc::COLOR_BGR2GRAY)
        .map_err(Error::cv("BGR2GRAY"))?;
    let bytes = gray
        .data_bytes()
        .map_err(Error::cv("reading gray pixels"))?;
    debug_assert_eq!(bytes.len(), size * size);
    Ok(bytes.to_vec())
}

/// BGR to 8-bit gray at the image's own size: `(width, height, row-major bytes)`.
pub fn to_gray_native(bgr: &Mat) -> Result<(usize, usize, Vec<u8>)> {
    let mut gray = Mat::default();
    imgproc::cvt_color_def(bgr, &mut gray, imgproc::COLOR_BGR2GRAY)
        .map_err(Error::cv("BGR2GRAY"))?;
    let (w, h) = (gray.cols() as usize, gray.rows() as usize);
    let bytes = gray
        .data_bytes()
        .map_err(Error::cv("reading gray pixels"))?;
    Ok((w, h, bytes.to_vec()))
}

/// A frame as the network sees it: colour read, bicubic resize to `size`, gray.
pub fn load_gray(path: &Path, size: usize) -> Result<Vec<u8>> {
    let m = read_color(path)?;
    to_gray(&m, size).map_err(|e| match e {
        Error::OpenCv { context, error } => Error::image(path, format!("{context}: {error}")),
        e => e,
    })
}

/// A Haar-cascade face detector for frames that are not pre-cropped.
pub struct FaceCropper {
    classifier: CascadeClassifier,
    cascade: PathBuf,
    /// Margin added on each side of the detected box, as a fraction of its size.
    pub margin: f64,
}

impl FaceCropper {
    /// Loads a cascade file (e.g. [`DEFAULT_CASCADE`]).
    pub fn new(cascade: &Path) -> Result<Self> {
        let name = opencv_path(
            cascade,
            "no cascade file (Debian: apt-get install opencv-data)",
        )?;
        let classifier =
            CascadeClassifier::new(name).map_err(|e| Error::image(cascade, e.to_string()))?;
        if classifier
            .empty()
            .map_err(|e| Error::image(cascade, e.to_string()))?
        {
            return Err(Error::image(cascade, "not a cascade OpenCV can load"));
        }
        Ok(FaceCropper {
            classifier,
            cascade: cascade.to_path_buf(),
            margin: 0.1,
        })
    }

    /// The loaded cascade file.
    pub fn cascade(&self) -> &Path {
        &self.cascade
    }

    /// The largest face in a BGR image, enlarged by the margin and clipped to the image.
    pub fn detect(&mut self, bgr: &Mat) -> Result<Option<Rect>> {
        let mut gray = Mat::default();
        imgproc::cvt_color_def(bgr, &mut gray, imgproc::COLOR_BGR2GRAY)
            .map_err(Error::cv("BGR2GRAY for detection"))?;
        let mut eq = Mat::default();
        imgproc::equalize_hist(&gray, &mut eq).map_err(Error::cv("equalize_hist"))?;
        let mut faces = Vector::<Rect>::new();
        let min = (gray.cols().min(gray.rows()) / 5).max(24);
        self.classifier
            .detect_multi_scale(
                &eq,
                &mut faces,
                1.1,
                3,
                0,
                Size::new(min, min),
                Size::new(0, 0),
            )
            .map_err(Error::cv("detect_multi_scale"))?;
        let Some(best) = faces.iter().max_by_key(|r| r.width * r.height) else {
            return Ok(None);
        };
        let mx = (best.width as f64 * self.margin).round() as i32;
        let my = (best.height as f64 * self.margin).round() as i32;
        let x0 = (best.x - mx).max(0);
        let y0 = (best.y - my).max(0);
        let x1 = (best.x + best.width + mx).min(gray.cols());
        let y1 = (best.y + best.height + my).min(gray.rows());
        Ok(Some(Rect::new(x0, y0, x1 - x0, y1 - y0)))
    }
}

/// The region `rect` of an image (a copy).
pub fn crop(bgr: &Mat, rect: Rect) -> Result<Mat> {
    let roi = Mat::roi(bgr, rect).map_err(Error::cv("crop"))?;
    roi.try_clone().map_err(Error::cv("crop copy"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::{Vec3b, CV_8UC3};

    /// A deterministic colour test image (w x h, BGR).
    fn pattern(w: usize, h: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                v.push(((x * 7 + y * 3) % 256) as u8);
                v.push(((x * x / 5 + y * 11) % 256) as u8);
                v.push((((x as f32 * 0.2).sin() * 100.0 + 128.0 + y as f32) as usize % 256) as u8);
            }
        }
        v
    }

    #[test]
    fn equals_opencv_pipeline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.png");
        let (w, h) = (170, 150);
        let bytes = pattern(w, h);
        let mat = Mat::new_rows_cols_with_bytes::<Vec3b>(h as i32, w as i32, &bytes).unwrap();
        imgcodecs::imwrite(path.to_str().unwrap(), &mat, &Vector::new()).unwrap();
        let ours = load_gray(&path, FEATURE_SIZE).unwrap();
        // The reference's steps, spelled out with OpenCV directly.
        let img = imgcodecs::imread(path.to_str().unwrap(), imgcodecs::IMREAD_COLOR).unwrap();
        assert_eq!(img.typ(), CV_8UC3);
        let mut r = Mat::default();
        imgproc::resize(
            &img,
            &mut r,
            Size::new(112, 112),
            0.0,
            0.0,
            imgproc::INTER_CUBIC,
        )
        .unwrap();
        let mut g = Mat::default();
        imgproc::cvt_color(&r, &mut g, imgproc::COLOR_BGR2GRAY, 0).unwrap();
        assert_eq!(ours, g.data_bytes().unwrap());
        assert_eq!(ours.len(), 112 * 112);
        // gray-then-resize is a different (wrong) order
        let mut g2 = Mat::default();
        imgproc::cvt_color(&img, &mut g2, imgproc::COLOR_BGR2GRAY, 0).unwrap();
        let mut r2 = Mat::default();
        imgproc::resize(
            &g2,
            &mut r2,
            Size::new(112, 112),
            0.0,
            0.0,
            imgproc::INTER_CUBIC,
        )
        .unwrap();
        assert_ne!(ours, r2.data_bytes().unwrap());
    }

    #[test]
    fn unreadable_images_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.jpg");
        let e = load_gray(&missing, 112).unwrap_err().to_string();
        assert!(
            e.contains("none.jpg") && e.contains("no such image file"),
            "{e}"
        );
        let junk = dir.path().join("junk.jpg");
        std::fs::write(&junk, b"\xff\xd8\xff garbage").unwrap();
        let e = load_gray(&junk, 112).unwrap_err().to_string();
        assert!(
            e.contains("junk.jpg") && e.contains("cannot be decoded"),
            "{e}"
        );
    }

    #[test]
    fn face_cropper_loads_and_never_panics() {
        let Ok(mut fc) = FaceCropper::new(Path::new(DEFAULT_CASCADE)) else {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(!ci, "{DEFAULT_CASCADE} missing (install opencv-data)");
            eprintln!("skipped: {DEFAULT_CASCADE} missing (install opencv-data)");
            return;
        };
        let blank =
            Mat::new_rows_cols_with_default(120, 160, CV_8UC3, opencv::core::Scalar::all(128.0))
                .unwrap();
        assert_eq!(fc.detect(&blank).unwrap(), None);
        let r = Rect::new(10, 20, 50, 40);
        let c = crop(&blank, r).unwrap();
        assert_eq!((c.cols(), c.rows()), (50, 40));
        assert!(FaceCropper::new(Path::new("/nonexistent.xml")).is_err());
    }
}
