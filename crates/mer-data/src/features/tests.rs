use super::*;
use crate::index::{index_root, IndexOptions};
use crate::synth::{synthesize, SynthConfig, SYNTH_LIST};

/// A tiny synthetic database (3 subjects x 2 samples, 3 frames of 96 px).
fn tiny_db(dir: &Path) -> PathBuf {
    let root = dir.join("db");
    let cfg = SynthConfig {
        subjects: 3,
        samples_per_subject: 2,
        frames: 3,
        size: 96,
        seed: 11,
        jpeg_quality: 95,
        extra_rows: false,
        megc: false,
    };
    synthesize(&root, &cfg).unwrap();
    root
}

#[test]
fn features_equal_flow_crate_output_on_the_same_pair() {
    let dir = tempfile::tempdir().unwrap();
    let root = tiny_db(dir.path());
    let idx = index_root(&root, &IndexOptions::default()).unwrap();
    let s = &idx.samples[0];
    let cfg = FeatureConfig::default();
    let tvl1 = TvL1::new(cfg.tvl1.clone()).unwrap();
    let f = compute_features(&s.onset_path, &s.apex_path, &cfg, &tvl1, None).unwrap();
    // The same pair straight through preprocessing and the flow crate.
    let g0 = load_gray(&s.onset_path, 112).unwrap();
    let g1 = load_gray(&s.apex_path, 112).unwrap();
    let flow = tvl1
        .compute(
            &GrayImage::from_u8(112, 112, &g0).unwrap(),
            &GrayImage::from_u8(112, 112, &g1).unwrap(),
        )
        .unwrap();
    assert_eq!(&f.flow[..112 * 112], &flow.u()[..]);
    assert_eq!(&f.flow[112 * 112..], &flow.v()[..]);
    assert_eq!(f.strain, optical_strain(&flow, StrainFormula::Paper));
    assert_eq!(&f.frames[..112 * 112], &g0[..]);
    assert_eq!(&f.frames[112 * 112..], &g1[..]);
    // the inputs of each kind
    let x3 = f.input(InputKind::Flow3);
    let x2 = f.input(InputKind::FlowNoStrain);
    let raw = f.input(InputKind::RawImages);
    assert_eq!(x3.len(), 3 * 112 * 112);
    assert_eq!(&x3[..2 * 112 * 112], &x2[..]);
    assert_eq!(raw[5], g0[5] as f32 / 255.0);
    assert!(raw.iter().all(|&x| (0.0..=1.0).contains(&x)));
}

#[test]
fn cache_resumes_detects_corruption_and_loads() {
    let dir = tempfile::tempdir().unwrap();
    let root = tiny_db(dir.path());
    let list = root.join(SYNTH_LIST);
    let cache_root = dir.path().join("cache");
    let cfg = FeatureConfig::default();
    let (samples, x) = load_features(&root, &list, &cache_root, InputKind::Flow3, &cfg).unwrap();
    assert_eq!(samples.len(), 6);
    assert_eq!(x.len(), 6 * 3 * 112 * 112);
    assert!(x.iter().all(|v| v.is_finite()));
    let cache = FeatureCache::new(&cache_root, cfg.clone());
    let idx = index_root(&root, &IndexOptions::default()).unwrap();
    assert_eq!(
        cache.ensure(&idx.samples).unwrap(),
        CacheReport {
            computed: 0,
            reused: 6,
            repaired: 0
        }
    );
    // the other kinds come from the same files
    let x2 = cache.load(&samples, InputKind::FlowNoStrain).unwrap();
    assert_eq!(&x2[..2 * 112 * 112], &x[..2 * 112 * 112]);
    let raw = cache.load(&samples, InputKind::RawImages).unwrap();
    assert_eq!(raw.len(), 6 * 2 * 112 * 112);
    // a flipped byte is caught and named, then repaired
    let p = cache.path_of(&samples[1]);
    let mut bytes = std::fs::read(&p).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x55;
    std::fs::write(&p, &bytes).unwrap();
    let e = cache.read(&samples[1]).unwrap_err().to_string();
    assert!(
        e.contains(&p.display().to_string()) && e.contains("checksum mismatch"),
        "{e}"
    );
    let e = cache
        .load(&samples, InputKind::Flow3)
        .unwrap_err()
        .to_string();
    assert!(e.contains("checksum mismatch"), "{e}");
    // a truncated file (an interrupted writer without the atomic rename)
    let q = cache.path_of(&samples[2]);
    let b = std::fs::read(&q).unwrap();
    std::fs::write(&q, &b[..b.len() / 3]).unwrap();
    let e = cache.read(&samples[2]).unwrap_err().to_string();
    assert!(e.contains("not a valid safetensors file"), "{e}");
    // a deleted file: resumed
    std::fs::remove_file(cache.path_of(&samples[3])).unwrap();
    assert_eq!(
        cache.ensure(&idx.samples).unwrap(),
        CacheReport {
            computed: 3,
            reused: 3,
            repaired: 2
        }
    );
    let (_, again) = load_features(&root, &list, &cache_root, InputKind::Flow3, &cfg).unwrap();
    assert_eq!(again, x);
    // replaced frames (a regenerated database) make the file stale
    let s4 = &idx.samples[4];
    assert_eq!(s4.meta, samples[4]);
    std::fs::copy(&s4.onset_path, &s4.apex_path).unwrap();
    assert_eq!(
        cache.ensure(&idx.samples).unwrap(),
        CacheReport {
            computed: 1,
            reused: 5,
            repaired: 1
        }
    );
    let f4 = cache.read(&samples[4]).unwrap().unwrap();
    assert!(
        f4.flow.iter().all(|&x| x.abs() < 1e-3),
        "identical frames give zero flow"
    );
    // a list whose onset differs from the file's is stale for that sample
    let mut other = samples[0].clone();
    other.onset += 1;
    let e = cache.read(&other).unwrap_err().to_string();
    assert!(e.contains("onset is"), "{e}");
}

#[test]
fn key_covers_what_changes_the_features() {
    let a = FeatureConfig::default();
    assert_eq!(a.key(), FeatureConfig::default().key());
    let b = FeatureConfig {
        strain: StrainFormula::Reference,
        ..FeatureConfig::default()
    };
    let c = FeatureConfig {
        tvl1: TvL1Params {
            warps: 4,
            ..TvL1Params::default()
        },
        ..FeatureConfig::default()
    };
    let d = FeatureConfig {
        size: 64,
        ..FeatureConfig::default()
    };
    let keys = [a.key(), b.key(), c.key(), d.key()];
    for i in 0..4 {
        for j in 0..i {
            assert_ne!(keys[i], keys[j]);
        }
    }
    assert!(a.key_string().contains("tau: 0.25"), "{}", a.key_string());
}

#[test]
fn bad_frames_give_errors_naming_the_sample_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = tiny_db(dir.path());
    let idx = index_root(&root, &IndexOptions::default()).unwrap();
    let s = &idx.samples[0];
    std::fs::write(&s.apex_path, b"\xff\xd8 truncated").unwrap();
    let cache = FeatureCache::new(&dir.path().join("cache"), FeatureConfig::default());
    let e = cache.ensure(&idx.samples).unwrap_err().to_string();
    assert!(
        e.contains(&s.meta.id())
            && e.contains(&s.apex_path.display().to_string())
            && e.contains("cannot be decoded"),
        "{e}"
    );
    // the other samples were cached all the same
    assert_eq!(
        idx.samples
            .iter()
            .filter(|x| cache.read(&x.meta).unwrap().is_some())
            .count(),
        idx.samples.len() - 1
    );
    // a list sample absent from the root
    let mut ghost = s.meta.clone();
    ghost.sample = "EP00_00".into();
    let e = ensure_features(&root, &[ghost], None, &cache)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("EP00_00") && e.contains("not found under"),
        "{e}"
    );
}

#[test]
fn synthetic_motion_is_seen_by_the_flow() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("db");
    let cfg = SynthConfig {
        subjects: 3,
        samples_per_subject: 3,
        frames: 3,
        size: 176,
        seed: 4,
        jpeg_quality: 95,
        extra_rows: false,
        megc: false,
    };
    synthesize(&root, &cfg).unwrap();
    let idx = index_root(&root, &IndexOptions::default()).unwrap();
    let fc = FeatureConfig::default();
    let tvl1 = TvL1::new(fc.tvl1.clone()).unwrap();
    let mut peaks = Vec::new();
    for s in &idx.samples {
        let f = compute_features(&s.onset_path, &s.apex_path, &fc, &tvl1, None).unwrap();
        let n = 112 * 112;
        let mut mags: Vec<f32> = (0..n).map(|i| f.flow[i].hypot(f.flow[n + i])).collect();
        mags.sort_by(f32::total_cmp);
        peaks.push((mags[n * 99 / 100], mags[n / 2]));
    }
    eprintln!("flow magnitude (p99, median) per sample: {peaks:?}");
    for &(p99, median) in &peaks {
        assert!((0.2..=4.0).contains(&p99), "{peaks:?}");
        assert!(median < p99, "{peaks:?}");
    }
}

#[test]
fn face_crop_path_runs() {
    let cascade = Path::new(crate::preprocess::DEFAULT_CASCADE);
    if !cascade.is_file() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "{} missing (install opencv-data)",
            cascade.display()
        );
        eprintln!(
            "skipped: {} missing (install opencv-data)",
            cascade.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = tiny_db(dir.path());
    let idx = index_root(&root, &IndexOptions::default()).unwrap();
    let s = &idx.samples[0];
    let cfg = FeatureConfig {
        face_crop: Some(cascade.to_path_buf()),
        ..FeatureConfig::default()
    };
    let tvl1 = TvL1::new(cfg.tvl1.clone()).unwrap();
    let mut fc = FaceCropper::new(cascade).unwrap();
    let f = compute_features(&s.onset_path, &s.apex_path, &cfg, &tvl1, Some(&mut fc)).unwrap();
    assert_eq!(f.flow.len(), 2 * 112 * 112);
    assert_ne!(cfg.key(), FeatureConfig::default().key());
}
