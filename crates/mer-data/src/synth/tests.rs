use super::*;
use crate::index::{index_root, IndexOptions};
use crate::list::{read_list, Dataset};

fn small(seed: u64) -> SynthConfig {
    SynthConfig {
        subjects: 4,
        samples_per_subject: 3,
        frames: 4,
        size: 64,
        seed,
        jpeg_quality: 90,
        extra_rows: true,
        megc: false,
    }
}

#[test]
fn round_trip_synth_then_index() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("synth");
    let report = synthesize(&root, &small(3)).unwrap();
    assert_eq!(report.samples, 12);
    assert_eq!(report.dropped_rows, 5);
    let expected = read_list(&root.join(SYNTH_LIST)).unwrap();
    assert_eq!(expected.len(), 12);
    let idx = index_root(&root, &IndexOptions::default()).unwrap();
    assert_eq!(idx.list(), expected, "dropped: {:?}", idx.dropped);
    let reasons: Vec<String> = idx.dropped.iter().map(|d| d.to_string()).collect();
    assert_eq!(reasons.len(), 5, "{reasons:#?}");
    assert!(
        reasons.contains(
            &"casme1/sub01/EP99_1: emotion `tense` is outside the 3-class rule".to_string()
        ),
        "{reasons:#?}"
    );
    assert!(
        reasons.contains(&"casme^2/15/disgust1_99: macro-expression".to_string()),
        "{reasons:#?}"
    );
    assert!(
        reasons.iter().any(|r| r
            .starts_with("casme2/sub01/EP99_02f: apex frame cell is text `/` (")
            && r.ends_with("sheet `Sheet1`, row 3)")),
        "{reasons:#?}"
    );
    // every database is present, with a native workbook
    for d in Dataset::ALL {
        assert!(expected.iter().any(|m| m.dataset == d), "{d} missing");
    }
    assert!(root.join("CASME/CASME-coded-20190721.xls").is_file());
    // frames decode at the configured size
    let img = opencv::imgcodecs::imread(
        idx.samples[0].apex_path.to_str().unwrap(),
        opencv::imgcodecs::IMREAD_COLOR,
    )
    .unwrap();
    use opencv::core::MatTraitConst;
    assert_eq!((img.rows(), img.cols(), img.channels()), (64, 64, 3));
}

fn tree_hash(root: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.ends_with(SYNTH_MARKER) {
                out.push((
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    mer_common::hash::fnv1a64(&std::fs::read(&p).unwrap()),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn deterministic_for_a_seed() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    synthesize(&a, &small(5)).unwrap();
    synthesize(&b, &small(5)).unwrap();
    synthesize(&c, &small(6)).unwrap();
    assert_eq!(tree_hash(&a), tree_hash(&b));
    assert_ne!(tree_hash(&a), tree_hash(&c));
}

#[test]
fn ensure_is_idempotent_and_refuses_foreign_folders() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("db");
    let cfg = small(1);
    let r1 = ensure_synth(&root, &cfg).unwrap();
    let marker_time = std::fs::metadata(root.join(SYNTH_MARKER))
        .unwrap()
        .modified()
        .unwrap();
    let r2 = ensure_synth(&root, &cfg).unwrap();
    assert_eq!(r1, r2);
    assert_eq!(
        std::fs::metadata(root.join(SYNTH_MARKER))
            .unwrap()
            .modified()
            .unwrap(),
        marker_time
    );
    let e = ensure_synth(&root, &small(2)).unwrap_err().to_string();
    assert!(e.contains("another configuration"), "{e}");
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("x.txt"), b"mine").unwrap();
    let e = ensure_synth(&other, &cfg).unwrap_err().to_string();
    assert!(e.contains("not a complete synthetic database"), "{e}");
    assert!(other.join("x.txt").is_file());
    // a leftover partial folder is replaced
    let p = dir.path().join("p");
    std::fs::create_dir_all(dir.path().join("p.partial/junk")).unwrap();
    ensure_synth(&p, &cfg).unwrap();
    assert!(!dir.path().join("p.partial").exists());
}

#[test]
fn motions_are_small_and_local() {
    let cfg = SynthConfig::default();
    let scale = cfg.size as f32 / 112.0;
    let mut maxes = Vec::new();
    for s in 0..40u64 {
        let mut rng = rng(9, &[s]);
        let face = Face::new(&mut rng, cfg.size);
        let class = Class::ALL[s as usize % 3];
        let (m, aus) = make_motion(&face, class, &cfg, &mut rng);
        assert!(!aus.is_empty());
        // the largest displacement over the image at the apex, in 112x112 pixels
        let mut max = 0.0f32;
        let mut mags = Vec::new();
        for y in (0..cfg.size).step_by(2) {
            for x in (0..cfg.size).step_by(2) {
                let (u, v) = ((x as f32 - face.cx) / face.a, (y as f32 - face.cy) / face.a);
                let (mut dx, mut dy) = (0.0f32, 0.0f32);
                for b in &m.bumps {
                    let w = (-((u - b.u).powi(2) + (v - b.v).powi(2)) / (2.0 * b.sigma * b.sigma))
                        .exp();
                    dx += w * b.du;
                    dy += w * b.dv;
                }
                let d = (dx * dx + dy * dy).sqrt() / scale;
                max = max.max(d);
                mags.push(d);
            }
        }
        let total = mags.len();
        let moved = mags.iter().filter(|&&d| d > 0.25 * max).count();
        assert!(
            (0.3..=3.5).contains(&max),
            "sample {s}: max displacement {max}"
        );
        assert!(
            moved < total * 3 / 10,
            "sample {s}: motion not local ({moved} of {total})"
        );
        maxes.push(max);
    }
    assert!(
        maxes.iter().any(|&m| m < 1.0) && maxes.iter().any(|&m| m > 2.0),
        "{maxes:?}"
    );
}

#[test]
fn class_balance_like_the_reference() {
    let v = class_plan(96, &mut rng(0, &[]));
    let count = |c| v.iter().filter(|&&x| x == c).count();
    assert_eq!(v.len(), 96);
    assert_eq!(
        (
            count(Class::Negative),
            count(Class::Positive),
            count(Class::Surprise)
        ),
        (63, 16, 17)
    );
    assert_eq!(SynthConfig::default().split(), [4, 2, 6]);
}

/// With `megc`, SMIC-HS and SAMM are written in their native layouts beside the three CASME
/// databases (which stay byte for byte what they are without them), and the MEGC 2019
/// benchmark indexes back exactly the planned CASME II, SMIC and SAMM samples, with the
/// planted `Other` row dropped and the `non_micro` clip skipped.
#[test]
fn megc_databases_index_back_exactly() {
    use crate::megc::{index_benchmark, Benchmark, SmicApex};
    let dir = tempfile::tempdir().unwrap();
    let (plain, with) = (dir.path().join("plain"), dir.path().join("megc"));
    synthesize(&plain, &small(5)).unwrap();
    let cfg = SynthConfig {
        megc: true,
        ..small(5)
    };
    let report = synthesize(&with, &cfg).unwrap();
    assert_eq!(report.samples, 12 + 2 * 2 * 3);
    let expected = read_list(&with.join(SYNTH_LIST)).unwrap();
    let megc: Vec<_> = expected
        .iter()
        .filter(|m| matches!(m.dataset, Dataset::Casme2 | Dataset::Smic | Dataset::Samm))
        .cloned()
        .collect();
    let idx = index_benchmark(
        &with,
        Benchmark::Megc2019,
        &IndexOptions::default(),
        SmicApex::Middle,
    )
    .unwrap();
    assert_eq!(idx.list(), megc, "dropped: {:?}", idx.dropped);
    let samm_drops: Vec<String> = idx
        .dropped
        .iter()
        .filter(|d| d.dataset == Dataset::Samm || d.dataset == Dataset::Smic)
        .map(|d| d.to_string())
        .collect();
    assert_eq!(samm_drops.len(), 1, "{samm_drops:?}");
    assert!(samm_drops[0].contains("006_9_9") && samm_drops[0].contains("`Other`"));
    // The Off-TANet benchmark sees the same three CASME databases as without MEGC.
    let a = index_root(&plain, &IndexOptions::default()).unwrap().list();
    let b = index_root(&with, &IndexOptions::default()).unwrap().list();
    assert_eq!(a, b);
    for f in [
        "CASME2/CASME2-coding-20140508.xlsx",
        "CASME/CASME-coded-20190721.xls",
    ] {
        assert_eq!(
            std::fs::read(plain.join(f)).unwrap(),
            std::fs::read(with.join(f)).unwrap(),
            "{f}"
        );
    }
    // SMIC frames are BMP with 6- or 8-digit counters; SAMM's padding varies by clip.
    let smic = idx
        .samples
        .iter()
        .find(|s| s.meta.dataset == Dataset::Smic)
        .unwrap();
    assert!(smic.onset_path.to_string_lossy().ends_with(".bmp"));
}
