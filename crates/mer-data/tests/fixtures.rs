//! The third-party fixtures of `fixtures/` (made by openpyxl, xlwt and Python's OpenCV
//! with `fixtures/regenerate.py`; versions in `fixtures/VERSIONS.md`) read through the
//! public API: the three native indexers on mini releases that mimic the real ones, and
//! the reference preprocessing against Python's `cv2`. The fixtures are in the repository:
//! these tests never skip.

use mer_data::index::{index_root, FrameSource, Index, IndexOptions, Layout};
use mer_data::list::{Class, Dataset, SampleMeta};
use mer_data::preprocess::load_gray;
use std::path::{Path, PathBuf};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures");

fn db(name: &str) -> PathBuf {
    Path::new(FIXTURES).join("db").join(name)
}

fn meta(
    dataset: Dataset,
    subject: &str,
    sample: &str,
    onset: u32,
    apex: u32,
    class: Class,
) -> SampleMeta {
    SampleMeta {
        dataset,
        subject: subject.into(),
        sample: sample.into(),
        onset,
        apex,
        class,
    }
}

fn index(root: &Path) -> Index {
    index_root(root, &IndexOptions::default())
        .unwrap_or_else(|e| panic!("indexing {}: {e}", root.display()))
}

/// The drops as (dataset, subject, sample, reason), in the order met.
fn drops(idx: &Index) -> Vec<(Dataset, String, String, String)> {
    idx.dropped
        .iter()
        .map(|d| {
            (
                d.dataset,
                d.subject.clone(),
                d.sample.clone(),
                d.reason.clone(),
            )
        })
        .collect()
}

fn drop_row(
    ds: Dataset,
    subject: &str,
    sample: &str,
    reason: String,
) -> (Dataset, String, String, String) {
    (ds, subject.into(), sample.into(), reason)
}

/// Checks the one native source found, and each kept sample's folder and frame files
/// (`<frames>/<subject>/<sample>/<prefix><N>.jpg`), which must decode.
fn check_source_and_frames(
    idx: &Index,
    dataset: Dataset,
    annotation: &Path,
    frames: &Path,
    prefix: &dyn Fn(&str) -> String,
) {
    assert_eq!(idx.sources.len(), 1, "{:?}", idx.sources);
    let src = &idx.sources[0];
    assert_eq!(src.dataset, dataset);
    assert_eq!(src.layout, Layout::Native);
    assert_eq!(src.annotation, annotation);
    assert_eq!(src.frames.as_deref(), Some(frames));
    for s in &idx.samples {
        let m = &s.meta;
        let dir = frames.join(&m.subject).join(&m.sample);
        assert_eq!(s.dir, dir, "{}", m.id());
        let p = prefix(&m.sample);
        assert_eq!(
            s.onset_path,
            dir.join(format!("{p}{}.jpg", m.onset)),
            "{}",
            m.id()
        );
        assert_eq!(
            s.apex_path,
            dir.join(format!("{p}{}.jpg", m.apex)),
            "{}",
            m.id()
        );
        let on = load_gray(&s.onset_path, 112).unwrap();
        let ap = load_gray(&s.apex_path, 112).unwrap();
        assert_eq!((on.len(), ap.len()), (112 * 112, 112 * 112));
        assert_ne!(
            on,
            ap,
            "{}: onset and apex frames are different pictures",
            m.id()
        );
    }
}

#[test]
fn casme1_section_xls_by_xlwt() {
    use Class::*;
    const DS: Dataset = Dataset::Casme1;
    let root = db("casme1");
    let xls = root.join("Section A.xls");
    let crop = root.join("Cropped");
    let idx = index(&root);
    assert_eq!(
        idx.list(),
        vec![
            meta(DS, "sub01", "EP01_5", 113, 121, Positive), // ApexF2 `\`
            meta(DS, "sub01", "EP13_10", 40, 45, Negative),  // `comtempt`
            meta(DS, "sub02", "EP11", 61, 69, Surprise),     // bare name, second apex
        ]
    );
    check_source_and_frames(&idx, DS, &xls, &crop, &|s| format!("reg_{s}-"));
    assert_eq!(
        drops(&idx),
        vec![
            drop_row(
                DS,
                "sub03",
                "EP05_2",
                "emotion `tense` is outside the 3-class rule".into()
            ),
            drop_row(
                DS,
                "sub04",
                "EP07_1",
                format!(
                    "apex frame cell is text `\\` ({}, sheet `Sheet1`, row 6)",
                    xls.display()
                )
            ),
            drop_row(
                DS,
                "sub06",
                "EP19_6",
                format!(
                    "apex frame 158 missing: no reg_EP19_6-158.jpg in {} (2 frames there)",
                    crop.join("sub06/EP19_6").display()
                )
            ),
        ]
    );
}

#[test]
fn casme2_xlsx_by_openpyxl() {
    use Class::*;
    const DS: Dataset = Dataset::Casme2;
    let root = db("casme2");
    let xlsx = root.join("CASME2-coding-20140508.xlsx");
    let crop = root.join("Cropped");
    let idx = index(&root);
    assert_eq!(
        idx.list(),
        vec![
            meta(DS, "sub01", "EP02_01f", 46, 59, Positive), // subject 1 (number)
            meta(DS, "sub02", "EP09f", 21, 38, Surprise),    // subject "02" (text), apex = offset
            meta(DS, "sub26", "EP06_02_01", 12, 30, Negative), // repression
        ]
    );
    // Cropped/sub01 holds a `.lnk` shortcut and EP02_01f a Thumbs.db: both ignored.
    check_source_and_frames(&idx, DS, &xlsx, &crop, &|_| "reg_img".into());
    assert_eq!(
        drops(&idx),
        vec![
            drop_row(
                DS,
                "sub04",
                "EP12_01f",
                format!(
                    "apex frame cell is text `/` ({}, sheet `Sheet1`, row 4)",
                    xlsx.display()
                )
            ),
            drop_row(DS, "sub05", "EP09_05f", "onset equals apex (108)".into()),
            drop_row(
                DS,
                "sub03",
                "EP01_11f",
                "emotion `others` is outside the 3-class rule".into()
            ),
            drop_row(
                DS,
                "sub11",
                "EP15_04f",
                format!(
                    "apex frame 57 missing: no reg_img57.jpg in {} (2 frames there)",
                    crop.join("sub11/EP15_04f").display()
                )
            ),
        ]
    );
}

#[test]
fn casme_sq_xlsx_by_openpyxl() {
    use Class::*;
    const DS: Dataset = Dataset::CasMeSquared;
    let root = db("casme_sq");
    let xlsx = root.join("CAS(ME)^2code_final.xlsx");
    let crop = root.join("cropped");
    let idx = index(&root);
    // Subjects are the bare folder numbers of sheet `naming rule1` (participant 1 -> 15).
    assert_eq!(
        idx.list(),
        vec![
            meta(DS, "15", "anger1_1", 557, 572, Negative),
            meta(DS, "16", "happy1_4", 1030, 1041, Positive), // offset 1036 < apex
            meta(DS, "20", "happy2_3", 88, 95, Surprise),     // img88.jpg, not zero-padded
        ]
    );
    check_source_and_frames(&idx, DS, &xlsx, &crop, &|_| "img".into());
    assert_eq!(
        drops(&idx),
        vec![
            drop_row(DS, "15", "disgust1_3", "macro-expression".into()),
            drop_row(
                DS,
                "16",
                "happy4_12",
                format!("no frame folder: {}", crop.join("16/happy4_12").display())
            ),
            drop_row(
                DS,
                "19",
                "anger2_2",
                "emotion `others` is outside the 3-class rule".into()
            ),
            drop_row(
                DS,
                "19",
                "disgust2_5",
                format!(
                    "apex frame is 0 ({}, sheet `CASFEcode_final`, row 6)",
                    xlsx.display()
                )
            ),
        ]
    );
}

#[test]
fn the_three_releases_under_one_root() {
    let root = Path::new(FIXTURES).join("db");
    let all = index(&root);
    let parts: Vec<Index> = ["casme1", "casme_sq", "casme2"]
        .map(|d| index(&db(d)))
        .into();
    // Found by their annotation files' names, in list order casme1, casme^2, casme2.
    let datasets: Vec<Dataset> = all.sources.iter().map(|s| s.dataset).collect();
    assert_eq!(datasets, Dataset::ALL);
    assert_eq!(
        all.list(),
        parts.iter().flat_map(|p| p.list()).collect::<Vec<_>>()
    );
    assert_eq!(all.samples.len(), 9);
    assert_eq!(
        drops(&all),
        parts.iter().flat_map(drops).collect::<Vec<_>>()
    );
    assert_eq!(all.dropped.len(), 11);
}

#[test]
fn raw_frames_are_absent_from_the_fixtures() {
    // No `CASME2_RAW_selected/`, `rawpic/` or raw CASME folder: every row that reaches the
    // frame lookup is dropped for that reason, the others for their own.
    let opts = IndexOptions {
        source: FrameSource::Raw,
        ..IndexOptions::default()
    };
    let idx = index_root(&Path::new(FIXTURES).join("db"), &opts).unwrap();
    assert!(idx.samples.is_empty(), "{:?}", idx.list());
    let no_folder = idx
        .dropped
        .iter()
        .filter(|d| {
            d.reason
                .starts_with("no frame folder beside the annotation: ")
        })
        .count();
    // casme1: 3 kept + EP19_6; casme2: 3 kept + EP09_05f + EP15_04f; casme^2: 3 kept + happy4_12
    assert_eq!(no_folder, 13, "{:#?}", idx.dropped);
    assert_eq!(idx.dropped.len(), 20);
}

// ---------------------------------------------------------------------------------------
// Preprocessing against Python's OpenCV

/// A minimal `.npy` reader for uint8 C-order arrays: (shape, bytes).
fn read_npy_u8(path: &Path) -> (Vec<usize>, Vec<u8>) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&b[..6], b"\x93NUMPY", "{}: not .npy", path.display());
    let (len, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => panic!("{}: .npy version {v}", path.display()),
    };
    let header = std::str::from_utf8(&b[start..start + len]).unwrap();
    assert!(
        header.contains("'descr': '|u1'") && header.contains("'fortran_order': False"),
        "{}: not C-order uint8: {header}",
        path.display()
    );
    let shape_at = header.find("'shape': (").expect("a shape") + "'shape': (".len();
    let shape_end = shape_at + header[shape_at..].find(')').expect("shape end");
    let shape: Vec<usize> = header[shape_at..shape_end]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let data = b[start + len..].to_vec();
    assert_eq!(
        data.len(),
        shape.iter().product::<usize>(),
        "{}",
        path.display()
    );
    (shape, data)
}

#[test]
fn load_gray_equals_python_cv2() {
    let dir = Path::new(FIXTURES).join("frames");
    let names = [
        "gradient_40x32.jpg",
        "gradient_40x32.png",
        "shapes_32x40.jpg",
        "checker_160x128.jpg",
    ];
    let mut report = Vec::new();
    for name in names {
        let (shape, want) = read_npy_u8(&dir.join(format!("{name}.gray112.npy")));
        assert_eq!(shape, [112, 112], "{name}");
        let ours = load_gray(&dir.join(name), 112).unwrap();
        assert_eq!(ours.len(), want.len(), "{name}");
        let diff: Vec<u8> = ours
            .iter()
            .zip(&want)
            .map(|(a, b)| a.abs_diff(*b))
            .collect();
        let differing = diff.iter().filter(|&&d| d != 0).count();
        let max = diff.iter().copied().max().unwrap_or(0);
        report.push(format!(
            "{name}: {differing} of {} pixels differ, max |diff| {max}",
            want.len()
        ));
        assert!(
            max <= 1,
            "{name}: max |diff| {max} against Python's cv2 (> 1)"
        );
    }
    eprintln!("load_gray vs Python cv2:\n  {}", report.join("\n  "));
}

/// SAMM's workbook as openpyxl writes it (13-row preamble, header on row 14, text and
/// number subjects, a formula cell, number AU cells, trailing rows without a subject) and
/// frames whose zero-padding changes from clip to clip: the kept samples and every drop.
#[test]
fn samm_workbook_by_openpyxl() {
    let root = db("samm");
    let idx = mer_data::megc::index_samm(&root.join("SAMM_Micro_FACS_Codes_v2.xlsx"))
        .unwrap_or_else(|e| panic!("{e}"));
    use Class::*;
    let s = Dataset::Samm;
    assert_eq!(
        idx.list(),
        vec![
            meta(s, "006", "006_1_2", 5562, 5588, Negative),
            meta(s, "006", "006_1_5", 180, 190, Surprise),
            meta(s, "007", "007_3_1", 1001, 1020, Positive),
            meta(s, "011", "011_2_3", 500, 520, Negative),
        ]
    );
    // The padded file names were found by number: 5 digits in one clip, 4 in the other.
    let paths: Vec<String> = idx
        .samples
        .iter()
        .map(|x| {
            x.apex_path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        paths[..2],
        ["006_05588.jpg".to_string(), "006_0190.jpg".to_string()]
    );
    let d = drops(&idx);
    let reasons: Vec<(&str, &str)> = d
        .iter()
        .map(|(_, _, n, r)| (n.as_str(), r.as_str()))
        .collect();
    assert_eq!(reasons.len(), 6, "{reasons:#?}");
    let has = |name: &str, text: &str| {
        assert!(
            reasons.iter().any(|(n, r)| *n == name && r.contains(text)),
            "{name}: no drop containing `{text}` in {reasons:#?}"
        )
    };
    has(
        "007_6_1",
        "emotion `Other` is not one of MEGC's three classes",
    );
    has("028_4_1", "apex 990 is outside onset-offset 1000-1050");
    has("009_2_1", "offset frame 330 missing");
    has("010_1_1", "apex frame cell is text `x`");
    has(
        "012_3_3",
        "emotion `others` is not one of MEGC's three classes",
    );
    has("013_1_1", "unknown emotion `joy`");
    assert!(d.iter().all(|(ds, _, _, _)| *ds == Dataset::Samm));
    assert_eq!(
        idx.sources[0].frames.as_deref(),
        Some(root.join("SAMM").as_path())
    );
}

/// The original SMIC-HS release (cropped BMP frames, camera counters of 6 to 8 digits):
/// labels from the folders, onset and offset the first and last frames, the middle apex;
/// `non_micro/` skipped; a folder and name that disagree, and a one-frame clip, dropped.
#[test]
fn smic_hs_original_release_by_opencv() {
    let hs = db("smic").join("SMIC_all_cropped").join("HS");
    let idx = mer_data::megc::index_smic(&hs, mer_data::megc::SmicApex::Middle)
        .unwrap_or_else(|e| panic!("{e}"));
    use Class::*;
    let s = Dataset::Smic;
    assert_eq!(
        idx.list(),
        vec![
            meta(s, "s01", "s1_ne_01", 76518, 76520, Negative),
            meta(s, "s18", "s18_sur_03", 1695782, 1695783, Surprise),
            meta(s, "s19", "s19_po_01", 17581039, 17581040, Positive),
        ]
    );
    assert_eq!(
        idx.samples[0].apex_path.file_name().unwrap(),
        "reg_image076520.bmp"
    );
    assert_eq!(
        idx.samples[2].onset_path.file_name().unwrap(),
        "reg_image17581039.bmp"
    );
    let d = drops(&idx);
    assert_eq!(d.len(), 2, "{d:#?}");
    assert_eq!((d[0].1.as_str(), d[0].2.as_str()), ("s02", "s2_po_02"));
    assert!(
        d[0].3
            .contains("the folder says negative, the clip name `s2_po_02` says positive"),
        "{d:?}"
    );
    assert_eq!((d[1].1.as_str(), d[1].2.as_str()), ("s03", "s3_sur_01"));
    assert!(d[1].3.contains("one frame only (426679)"), "{d:?}");
    assert!(
        idx.samples.iter().all(|x| !x.meta.sample.contains("_05")),
        "non_micro was indexed"
    );
}

/// `--benchmark megc2019` under the fixtures' root: CASME II, SMIC-HS and SAMM, and not
/// CASME or CAS(ME)^2; the default benchmark is unchanged by the SMIC and SAMM folders.
#[test]
fn megc2019_benchmark_under_one_root() {
    use mer_data::megc::{index_benchmark, Benchmark, SmicApex};
    let root = Path::new(FIXTURES).join("db");
    let opts = IndexOptions::default();
    let idx = index_benchmark(&root, Benchmark::Megc2019, &opts, SmicApex::Middle).unwrap();
    let count = |d: Dataset| idx.samples.iter().filter(|s| s.meta.dataset == d).count();
    let casme2 = mer_data::index::index_casme2(
        &db("casme2").join("CASME2-coding-20140508.xlsx"),
        FrameSource::Cropped,
    )
    .unwrap();
    assert_eq!(count(Dataset::Casme2), casme2.samples.len());
    assert_eq!((count(Dataset::Smic), count(Dataset::Samm)), (3, 4));
    assert_eq!(count(Dataset::Casme1) + count(Dataset::CasMeSquared), 0);
    let default = index_benchmark(&root, Benchmark::OffTanet, &opts, SmicApex::Middle).unwrap();
    assert_eq!(default.list(), index(&root).list());
    assert!(default
        .samples
        .iter()
        .all(|s| Dataset::ALL.contains(&s.meta.dataset)));
}

/// The SMIC-E release (`fixtures/smic-e`, openpyxl + OpenCV): the workbook's later layout
/// found by column names, labels from the clip names (s18_sur_03's Emotion cell says
/// negative), onset and offset checked on disk (s1_ne_03's offset is past its last frame),
/// a clip without a folder, the text FirstF ignored, rows out of subject order, the middle
/// apex; and found by the MEGC discovery where no original release is.
#[test]
fn smic_hs_e_release_by_openpyxl() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/smic-e");
    let wb = root.join("SMIC-E_raw image/HS_long/SMIC-HS-E_annotation.xlsx");
    let idx = mer_data::megc::index_smic_e(&wb, mer_data::megc::SmicApex::Middle)
        .unwrap_or_else(|e| panic!("{e}"));
    use Class::*;
    let s = Dataset::Smic;
    assert_eq!(
        idx.list(),
        vec![
            meta(s, "s03", "s3_ne_20", 426679, 426681, Negative),
            meta(s, "s18", "s18_sur_03", 1695782, 1695784, Surprise),
            meta(s, "s20", "s20_ne_01", 17581041, 17581043, Negative),
        ]
    );
    assert_eq!(
        idx.samples[2].apex_path.file_name().unwrap(),
        "image17581043.jpg"
    );
    let d = drops(&idx);
    assert_eq!(d.len(), 2, "{d:#?}");
    assert_eq!((d[0].1.as_str(), d[0].2.as_str()), ("s01", "s1_ne_03"));
    assert!(d[0].3.contains("offset frame 76508 missing"), "{d:?}");
    assert!(d[0].3.contains("row 4"), "{d:?}");
    assert_eq!((d[1].1.as_str(), d[1].2.as_str()), ("s02", "s2_po_04"));
    assert!(d[1].3.contains("no frame folder"), "{d:?}");

    let found = mer_data::megc::discover_megc(&root).unwrap();
    assert!(found.smic_hs.is_empty(), "{found:?}");
    assert_eq!(found.smic_e, vec![wb]);
    let via = mer_data::megc::index_benchmark(
        &root,
        mer_data::megc::Benchmark::Megc2019,
        &Default::default(),
        mer_data::megc::SmicApex::Middle,
    )
    .unwrap();
    assert_eq!(via.list(), idx.list());
}

/// `--smic-apex spotted` on the SMIC-E fixture: each apex is the frame of largest mean
/// strain between onset and offset, as `spot_apex` says on the clip's frames.
#[test]
fn smic_e_apex_spotted_from_the_flow() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/smic-e");
    let wb = root.join("SMIC-E_raw image/HS_long/SMIC-HS-E_annotation.xlsx");
    let idx = mer_data::megc::index_smic_e(&wb, mer_data::megc::SmicApex::Spotted)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(idx.samples.len(), 3);
    for s in &idx.samples {
        let frames: Vec<(u32, PathBuf)> = mer_data::index::scan_frames(&s.dir, "image")
            .unwrap()
            .into_iter()
            .filter(|(n, _)| (s.meta.onset..).contains(n))
            .collect();
        let offset = s.meta.onset + 4;
        let clip: Vec<(u32, PathBuf)> = frames.into_iter().filter(|(n, _)| *n <= offset).collect();
        let spotted =
            mer_data::spot::spot_apex(&clip, 112, mer_flow::strain::StrainFormula::Paper).unwrap();
        assert_eq!(s.meta.apex, spotted.apex, "{}", s.meta.sample);
        assert!(s.meta.apex > s.meta.onset && s.meta.apex <= offset);
    }
}
