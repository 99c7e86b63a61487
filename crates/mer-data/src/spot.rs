//! Apex spotting: for clips without an annotated apex (SMIC, a user's own clip).
//!
//! The rule: compute the TV-L1 flow (OpenCV's defaults) from the onset frame to every later
//! frame of the clip, each preprocessed as the features are (colour read, the face box cut
//! out when there is one, bicubic resize to `size` x `size`, gray), all pairs at once on the
//! rayon pool; score each frame by the mean optical-strain magnitude of its flow over the
//! image (the face crop, or the whole frame of a database's cropped clip), and take
//! the frame with the largest score (the first of equal ones). The score is the feature the
//! model sees: the apex is where the deformation from the onset is strongest. The field's
//! methods differ (STSTNet's D&C-RoIs on LBP differences, CapsuleNet's landmark cells, the
//! middle frame); this one needs nothing beyond the pipeline's own flow.

use std::path::PathBuf;

use mer_flow::strain::{optical_strain, StrainFormula};
use mer_flow::{Flow, GrayImage, TvL1, TvL1Params, Workspace};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The spotted apex and the score of every frame after the onset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spotted {
    /// The apex frame number.
    pub apex: u32,
    /// `(frame number, mean strain magnitude of the flow onset -> frame)`, in frame order.
    pub scores: Vec<(u32, f64)>,
}

/// Spots the apex of a clip: `frames` are `(frame number, path)` in order, the first the
/// onset; at least two. See the module documentation for the rule.
pub fn spot_apex(
    frames: &[(u32, PathBuf)],
    size: usize,
    formula: StrainFormula,
) -> Result<Spotted> {
    spot_apex_in(frames, size, formula, None)
}

/// [`spot_apex`] over a face box of the frames (the same box in every frame).
pub fn spot_apex_in(
    frames: &[(u32, PathBuf)],
    size: usize,
    formula: StrainFormula,
    face: Option<crate::clip::FaceBox>,
) -> Result<Spotted> {
    if frames.len() < 2 {
        return Err(too_few(
            frames.len(),
            frames.first().map(|f| f.1.display().to_string()),
        ));
    }
    let grays: Vec<(u32, Vec<u8>)> = frames
        .par_iter()
        .map(|(n, p)| Ok((*n, crate::clip::gray_of(p, size, face)?)))
        .collect::<Result<_>>()?;
    let name = |i: usize| frames[i].1.display().to_string();
    spot_apex_grays(&grays, size, formula, &name)
}

/// A bar for spotting over more than a few hundred frames (hidden otherwise, and when
/// standard error is not a terminal).
fn progress(pairs: usize) -> indicatif::ProgressBar {
    if pairs < 300 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(pairs as u64).with_message("spotting the apex");
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} frames ({eta})")
    {
        bar.set_style(style);
    }
    bar
}

fn too_few(found: usize, first: Option<String>) -> Error {
    Error::Invalid(format!(
        "apex spotting needs the onset and at least one later frame, found {found} frame(s){}",
        first.map_or(String::new(), |f| format!(" ({f})"))
    ))
}

/// [`spot_apex`] on frames already preprocessed: `(frame number, gray size x size)` in order,
/// the first the onset; `name(i)` names frame `i` in errors.
pub fn spot_apex_grays(
    frames: &[(u32, Vec<u8>)],
    size: usize,
    formula: StrainFormula,
    name: &dyn Fn(usize) -> String,
) -> Result<Spotted> {
    if frames.len() < 2 {
        return Err(too_few(frames.len(), frames.first().map(|_| name(0))));
    }
    let grays: Vec<GrayImage> = frames
        .iter()
        .enumerate()
        .map(|(i, (_, g))| {
            GrayImage::from_u8(size, size, g).map_err(|error| Error::Flow {
                context: format!("frame {}", name(i)),
                error,
            })
        })
        .collect::<Result<_>>()?;
    // One pair per task, sequential inside (as `compute_batch`), but each flow is reduced to
    // its score at once: a long clip holds one flow per thread, not one per frame.
    let tvl1 = TvL1::new(TvL1Params::default())
        .map_err(|error| Error::Flow {
            context: "TV-L1 parameters".into(),
            error,
        })?
        .with_parallel_from(usize::MAX);
    let bar = progress(frames.len() - 1);
    let scores = frames[1..]
        .par_iter()
        .enumerate()
        .map_init(
            || {
                let out = Flow::zeros(1, 1).expect("a 1 x 1 flow is a valid size");
                (Workspace::default(), out)
            },
            |(ws, out), (i, (n, _))| {
                // The error keeps the frame's index: `name` is not shared across threads.
                tvl1.compute_into(ws, &grays[0], &grays[i + 1], None, out)
                    .map_err(|error| (i + 1, error))?;
                let strain = optical_strain(out, formula);
                let mean =
                    strain.iter().map(|&s| s as f64).sum::<f64>() / strain.len().max(1) as f64;
                bar.inc(1);
                Ok((*n, mean))
            },
        )
        .collect::<std::result::Result<Vec<_>, _>>();
    bar.finish_and_clear();
    let scores = scores.map_err(|(i, error)| Error::Flow {
        context: format!("flow of {} -> {}", name(0), name(i)),
        error,
    })?;
    let apex = scores
        .iter()
        .fold(None::<(u32, f64)>, |best, &(n, s)| match best {
            Some((_, b)) if b >= s => best,
            _ => Some((n, s)),
        })
        .map(|(n, _)| n)
        .expect("at least one frame after the onset");
    Ok(Spotted { apex, scores })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::{Mat, Scalar, Size, CV_8UC3};

    /// A clip whose deformation rises and falls (an ellipse on a textured face-like
    /// background stretching to its widest at frame 7 of 0..12, then relaxing): the spotted
    /// apex is within one frame of the peak.
    #[test]
    fn spots_the_peak_of_a_rising_and_falling_motion() {
        let dir = tempfile::tempdir().unwrap();
        let peak = 7i32;
        let mut frames = Vec::new();
        for k in 0..12i32 {
            let stretch = (6 - (k - peak).abs()).max(0) as f64; // 0 at the ends, 6 at the peak
            let mut img =
                Mat::new_rows_cols_with_default(96, 96, CV_8UC3, Scalar::all(90.0)).unwrap();
            for y in (0..96).step_by(8) {
                opencv::imgproc::line(
                    &mut img,
                    opencv::core::Point::new(0, y),
                    opencv::core::Point::new(95, y + 4),
                    Scalar::all(140.0),
                    1,
                    opencv::imgproc::LINE_AA,
                    0,
                )
                .unwrap();
            }
            opencv::imgproc::ellipse(
                &mut img,
                opencv::core::Point::new(48, 50),
                Size::new(14 + stretch as i32, 9),
                0.0,
                0.0,
                360.0,
                Scalar::new(220.0, 200.0, 180.0, 0.0),
                -1,
                opencv::imgproc::LINE_AA,
                0,
            )
            .unwrap();
            let p = dir.path().join(format!("img{k}.png"));
            opencv::imgcodecs::imwrite(p.to_str().unwrap(), &img, &opencv::core::Vector::new())
                .unwrap();
            frames.push((100 + k as u32, p));
        }
        let s = spot_apex(&frames, 112, StrainFormula::Paper).unwrap();
        assert_eq!(s.scores.len(), 11);
        let want = 100 + peak as u32;
        assert!(
            s.apex.abs_diff(want) <= 1,
            "spotted {} for a peak at {want}: {:?}",
            s.apex,
            s.scores
        );
        let e = spot_apex(&frames[..1], 112, StrainFormula::Paper).unwrap_err();
        assert!(e.to_string().contains("at least one later frame"), "{e}");
    }
}
