//! Parity with OpenCV's own DualTVL1 (Debian's build, through the `opencv`
//! crate) on face-like pairs with small local motions, and accuracy against a
//! known ground-truth flow.

mod common;

use common::*;
use mer_flow::{TvL1, TvL1Params};

/// One pair: mean EPE between ours and OpenCV, and each against the ground truth.
fn check(size: usize, seed: u32, amp: f32, params: TvL1Params, max_epe: f64) {
    opencv::core::set_num_threads(1).unwrap();
    let (a, b, gt) = face_pair(size, seed, amp);
    let mut tv = opencv_tvl1(&params);
    let theirs = opencv_flow(
        &mut tv,
        size,
        size,
        &mat_u8(size, size, &a),
        &mat_u8(size, size, &b),
    );
    let ours = TvL1::new(params.clone())
        .unwrap()
        .compute(&gray(size, size, &a), &gray(size, size, &b))
        .unwrap();
    let epe = ours.mean_epe(&theirs).unwrap();
    let ours_gt = ours.mean_epe(&gt).unwrap();
    let theirs_gt = theirs.mean_epe(&gt).unwrap();
    let max_diff = ours
        .data()
        .iter()
        .zip(theirs.data())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    println!(
        "{size}x{size} seed {seed} amp {amp} {params:?}: EPE(ours, OpenCV) = {epe:.2e} (max |d| {max_diff:.2e}); \
         vs ground truth: ours {ours_gt:.4}, OpenCV {theirs_gt:.4}"
    );
    assert!(epe <= max_epe, "EPE to OpenCV {epe} > {max_epe}");
    assert!(
        ours_gt <= theirs_gt + 1e-3,
        "ours {ours_gt} worse than OpenCV {theirs_gt} against ground truth"
    );
}

#[test]
fn matches_opencv_at_112() {
    for (seed, amp) in [(1, 0.1), (2, 0.8), (3, 3.0)] {
        check(112, seed, amp, TvL1Params::default(), 0.005);
    }
}

#[test]
fn matches_opencv_at_256() {
    check(256, 4, 1.5, TvL1Params::default(), 0.005);
}

#[test]
fn matches_opencv_with_other_parameters() {
    let p = TvL1Params {
        nscales: 3,
        warps: 3,
        median_filtering: 3,
        epsilon: 0.02,
        scale_step: 0.5,
        ..Default::default()
    };
    check(112, 5, 2.0, p, 0.005);
    let p = TvL1Params {
        median_filtering: 1,
        inner_iterations: 10,
        outer_iterations: 3,
        ..Default::default()
    };
    check(112, 6, 1.0, p, 0.005);
    let p = TvL1Params {
        gamma: 0.1,
        ..Default::default()
    };
    check(112, 7, 1.0, p, 0.005);
}
