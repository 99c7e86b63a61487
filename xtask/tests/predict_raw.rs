//! `cargo xtask predict` on raw frames: the onset/apex pair path against the feature path
//! (exact to the reference code), a folder of frames with the apex spotted, and the face
//! detection's error on frames without a face.

mod common;

use std::path::{Path, PathBuf};

use common::{ok, xtask};
use mer_model::candle_core::{Device, Tensor};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("xtask-predict-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Off-TANet (`ta`) with seeded random weights, saved in `dir`.
fn random_weights(dir: &Path) -> PathBuf {
    let weights = dir.join("w.safetensors");
    mer_model::OffTaNet::random(&mer_model::ModelConfig::default(), &Device::Cpu)
        .unwrap()
        .save_safetensors(&weights)
        .unwrap();
    weights
}

/// The released weights, or `None` (printing why) where the reference data is absent;
/// under `CI=true` absence is a failure.
fn released_weights() -> Option<PathBuf> {
    let p = mer_model::reference_dir().join("LOSO1_60epoch.pth");
    if p.is_file() {
        return Some(p);
    }
    let msg = format!("reference weights {} not found", p.display());
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{msg} (CI=true)"
    );
    eprintln!("skipping: {msg} (set MER_REFERENCE_DIR)");
    None
}

/// `predict --onset A --apex B --face none --strain-formula reference` equals the feature
/// pipeline (`mer_data::features::compute_features`, exact to the reference code) followed
/// by `predict --features`, within 1e-4, with the released weights.
#[test]
fn raw_pair_equals_the_feature_path() {
    let Some(weights) = released_weights() else {
        return;
    };
    let dir = scratch("pair");
    let clip = fixtures().join("db/casme2/Cropped/sub01/EP02_01f");
    let (onset, apex) = (clip.join("reg_img46.jpg"), clip.join("reg_img59.jpg"));
    let cfg = mer_data::features::FeatureConfig {
        strain: mer_flow::strain::StrainFormula::Reference,
        ..Default::default()
    };
    let tvl1 = mer_flow::TvL1::new(cfg.tvl1.clone()).unwrap();
    let f = mer_data::features::compute_features(&onset, &apex, &cfg, &tvl1, None).unwrap();
    let x = Tensor::from_vec(
        f.input(mer_data::features::InputKind::Flow3),
        (1, 3, 112, 112),
        &Device::Cpu,
    )
    .unwrap();
    let feats = dir.join("x.npy");
    mer_model::npy::write_tensor(&feats, &x).unwrap();
    let (a, b, json) = (dir.join("a.npy"), dir.join("b.npy"), dir.join("p.json"));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    ok(
        &xtask(&[
            "predict",
            "--weights",
            &s(&weights),
            "--features",
            &s(&feats),
            "--out",
            &s(&a),
        ]),
        "predict --features",
    );
    let out = ok(
        &xtask(&[
            "predict",
            "--weights",
            &s(&weights),
            "--onset",
            &s(&onset),
            "--apex",
            &s(&apex),
            "--face",
            "none",
            "--strain-formula",
            "reference",
            "--out",
            &s(&b),
            "--json",
            &s(&json),
        ]),
        "predict --onset --apex",
    );
    let read = |p: &Path| {
        mer_model::npy::read_tensor(p, &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let (la, lb) = (read(&a), read(&b));
    assert_eq!(la.len(), 3);
    for (x, y) in la.iter().zip(&lb) {
        assert!((x - y).abs() <= 1e-4, "logits {la:?} vs {lb:?}");
    }
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let p = &j["predictions"][0];
    let class = p["class"].as_str().unwrap();
    assert!(out.contains(class), "{out}");
    let total: f64 = ["negative", "positive", "surprise"]
        .iter()
        .map(|k| p["probabilities"][k].as_f64().unwrap())
        .sum();
    assert!((total - 1.0).abs() < 1e-5, "{j}");
    assert_eq!(j["apex_spotted"], serde_json::json!(false));
    assert!(j["face_box"].is_null(), "{j}");
}

/// A folder of frames without `--apex`: the apex is spotted between onset and offset (as
/// `mer_data::spot` says), reported in the JSON with the score curve; a missing onset frame
/// and a frame without a face are errors that say what to do.
#[test]
fn frames_folder_spots_the_apex_and_errors_name_the_problem() {
    let dir = scratch("frames");
    let clip = fixtures().join("smic-e/SMIC-E_raw image/HS_long/SMIC-HS-E/s20/s20_ne_01");
    let weights = random_weights(&dir);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let json = dir.join("p.json");
    ok(
        &xtask(&[
            "predict",
            "--weights",
            &s(&weights),
            "--frames",
            &s(&clip),
            "--onset",
            "17581041",
            "--offset",
            "17581045",
            "--face",
            "none",
            "--json",
            &s(&json),
        ]),
        "predict --frames",
    );
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let frames: Vec<(u32, PathBuf)> = (17581041..=17581045)
        .map(|n| (n, clip.join(format!("image{n}.jpg"))))
        .collect();
    let want =
        mer_data::spot::spot_apex(&frames, 112, mer_flow::strain::StrainFormula::Paper).unwrap();
    assert_eq!(j["apex_spotted"], serde_json::json!(true), "{j}");
    assert_eq!(j["apex"], serde_json::json!(want.apex), "{j}");
    assert_eq!(j["onset"], serde_json::json!(17581041));
    assert_eq!(j["spotting_scores"].as_array().unwrap().len(), 4, "{j}");

    let out = xtask(&[
        "predict",
        "--weights",
        &s(&weights),
        "--frames",
        &s(&clip),
        "--onset",
        "17581000",
        "--face",
        "none",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("onset frame 17581000: no file numbered 17581000"),
        "{err}"
    );

    let out = xtask(&[
        "predict",
        "--weights",
        &s(&weights),
        "--frames",
        &s(&clip),
        "--onset",
        "17581041",
        "--apex",
        "17581043",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no face found") && err.contains("--face none"),
        "{err}"
    );
}

/// `train` one model on every subject of the tiny database, then `predict --weights` with it
/// on a raw pair: the weights load, and the record says what they were trained on.
#[test]
fn train_then_predict_round_trip() {
    let dir = common::setup();
    let out_dir = scratch("train");
    let weights = out_dir.join("ta.safetensors");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let text = ok(
        &common::train_ta(dir, &out_dir.join("cache"), 2, &weights),
        "train",
    );
    assert!(text.contains("ta: 2 epochs on all 12 samples"), "{text}");
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("ta.json")).unwrap()).unwrap();
    assert_eq!(rec["samples"], serde_json::json!(12));
    assert_eq!(rec["schedule"]["epochs"], serde_json::json!(2));
    assert_eq!(rec["train_loss"].as_array().unwrap().len(), 2);
    assert!(
        rec["list_hash"].as_str().is_some_and(|h| h.len() == 16),
        "{rec}"
    );
    let clip = fixtures().join("db/casme2/Cropped/sub01/EP02_01f");
    let text = ok(
        &xtask(&[
            "predict",
            "--weights",
            &s(&weights),
            "--onset",
            &s(&clip.join("reg_img46.jpg")),
            "--apex",
            &s(&clip.join("reg_img59.jpg")),
            "--face",
            "none",
        ]),
        "predict with the trained weights",
    );
    assert!(
        text.contains("negative") && text.lines().count() >= 2,
        "{text}"
    );
}

/// A face-like clip whose deformation rises and falls, peaking at frame `peak` of `n`
/// (an ellipse stretching on a striped background), as BGR frames of `w` x `h`.
fn rising_and_falling(n: i32, peak: i32, w: i32, h: i32) -> Vec<opencv::core::Mat> {
    use opencv::core::{Mat, Point, Scalar, Size, CV_8UC3};
    use opencv::imgproc::{ellipse, line, LINE_AA};
    (0..n)
        .map(|k| {
            let stretch = (6 - (k - peak).abs()).max(0);
            let mut img =
                Mat::new_rows_cols_with_default(h, w, CV_8UC3, Scalar::all(90.0)).unwrap();
            for y in (0..h).step_by(8) {
                line(
                    &mut img,
                    Point::new(0, y),
                    Point::new(w - 1, y + 4),
                    Scalar::all(140.0),
                    1,
                    LINE_AA,
                    0,
                )
                .unwrap();
            }
            ellipse(
                &mut img,
                Point::new(w / 2, h / 2 + 2),
                Size::new(14 + stretch, 9),
                0.0,
                0.0,
                360.0,
                Scalar::new(220.0, 200.0, 180.0, 0.0),
                -1,
                LINE_AA,
                0,
            )
            .unwrap();
            img
        })
        .collect()
}

/// `predict --video`: frames indexed from 0, the apex spotted within one frame of the
/// motion's peak, the JSON says so; an onset past the end names the video and its length;
/// `--heatmap` writes Fig. 5 of the clip.
#[test]
fn video_spots_the_apex_and_draws_the_heatmap() {
    use opencv::core::Size;
    use opencv::videoio::{VideoWriter, VideoWriterTrait};
    let dir = scratch("video");
    let video = dir.join("clip.avi");
    let mut w = VideoWriter::new_def(
        video.to_str().unwrap(),
        VideoWriter::fourcc('M', 'J', 'P', 'G').unwrap(),
        30.0,
        Size::new(96, 96),
    )
    .unwrap();
    for f in rising_and_falling(14, 8, 96, 96) {
        w.write(&f).unwrap();
    }
    w.release().unwrap();
    let weights = random_weights(&dir);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (json, png) = (dir.join("v.json"), dir.join("fig5.png"));
    let text = ok(
        &xtask(&[
            "predict",
            "--weights",
            &s(&weights),
            "--video",
            &s(&video),
            "--onset",
            "1",
            "--face",
            "none",
            "--json",
            &s(&json),
            "--heatmap",
            &s(&png),
        ]),
        "predict --video",
    );
    assert!(text.contains("(spotted)"), "{text}");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(j["onset"], serde_json::json!(1));
    assert_eq!(j["apex_spotted"], serde_json::json!(true));
    let apex = j["apex"].as_u64().unwrap();
    assert!(apex.abs_diff(8) <= 1, "spotted {apex} for a peak at 8: {j}");
    // Every frame after the onset to the end (13) scored.
    assert_eq!(j["spotting_scores"].as_array().unwrap().len(), 12, "{j}");
    assert!(common::is_png(&png));

    // --apex given: no spotting; an offset past the end and an onset past the end are errors.
    ok(
        &xtask(&[
            "predict",
            "--weights",
            &s(&weights),
            "--video",
            &s(&video),
            "--onset",
            "1",
            "--apex",
            "8",
            "--face",
            "none",
            "--json",
            &s(&json),
        ]),
        "predict --video --apex",
    );
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        (j["apex"].clone(), j["apex_spotted"].clone()),
        (serde_json::json!(8), serde_json::json!(false))
    );
    let out = xtask(&[
        "predict",
        "--weights",
        &s(&weights),
        "--video",
        &s(&video),
        "--onset",
        "20",
        "--face",
        "none",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("clip.avi") && err.contains("has 14 frame(s)"),
        "{err}"
    );
    // A baseline has no attention maps to draw.
    let b = dir.join("ststnet.safetensors");
    mer_model::ModelSpec::Baseline("ststnet".parse().unwrap())
        .random(&Device::Cpu)
        .unwrap()
        .save_safetensors(&b)
        .unwrap();
    let out = xtask(&[
        "predict",
        "--model",
        "ststnet",
        "--weights",
        &s(&b),
        "--video",
        &s(&video),
        "--onset",
        "1",
        "--apex",
        "8",
        "--face",
        "none",
        "--heatmap",
        &s(&png),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no attention maps"),
        "{err}"
    );
}

/// The astronaut photograph (scikit-image's, NASA, public domain) in a larger scene
/// (`fixtures/frames/astronaut_scene_640x480.jpg`): `--face auto` finds a square box around
/// her face, not the whole frame, and reports it in the onset frame's pixels.
#[test]
fn face_auto_crops_the_face_of_a_photograph() {
    let dir = scratch("face");
    let scene = fixtures().join("frames/astronaut_scene_640x480.jpg");
    let weights = random_weights(&dir);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let json = dir.join("f.json");
    ok(
        &xtask(&[
            "predict",
            "--weights",
            &s(&weights),
            "--onset",
            &s(&scene),
            "--apex",
            &s(&scene),
            "--json",
            &s(&json),
        ]),
        "predict --face auto",
    );
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let b: Vec<i64> = j["face_box"]
        .as_array()
        .unwrap_or_else(|| panic!("no face box: {j}"))
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let (x, y, w, h) = (b[0], b[1], b[2], b[3]);
    assert_eq!(w, h, "square box {b:?}");
    // The face of the pasted photograph (eyes to chin), annotated by hand in regenerate.py.
    let face = mer_data_face();
    assert!(
        x <= face[0] && y <= face[1] && x + w >= face[0] + face[2] && y + h >= face[1] + face[3],
        "box {b:?} does not contain the face {face:?}"
    );
    assert!(w * h * 6 < 640 * 480, "box {b:?} is not just the face");
}

/// The face box of `astronaut_scene_640x480.jpg`, `[x, y, w, h]`: `ASTRONAUT_FACE` in
/// `fixtures/regenerate.py`, read from `fixtures/frames/astronaut_scene_640x480.face.txt`.
fn mer_data_face() -> [i64; 4] {
    let t = std::fs::read_to_string(fixtures().join("frames/astronaut_scene_640x480.face.txt"))
        .unwrap();
    let v: Vec<i64> = t.split_whitespace().map(|s| s.parse().unwrap()).collect();
    [v[0], v[1], v[2], v[3]]
}
