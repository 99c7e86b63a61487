use super::*;
use crate::list::{compare_lists, format_list, read_list, sort_samples};
use crate::testutil::{reference_dir, touch_frames};
use crate::workbook::{write_xls, write_xlsx, SheetData, Value};

fn v(s: &str) -> Value {
    if s.is_empty() {
        Value::Empty
    } else if let Ok(n) = s.parse::<f64>() {
        Value::Number(n)
    } else {
        Value::Text(s.to_string())
    }
}

/// A sheet from rows of `|`-separated cells (numbers become number cells; `'01` is text).
fn sheet(name: &str, rows: &[&str]) -> SheetData {
    SheetData {
        name: name.into(),
        rows: rows
            .iter()
            .map(|r| {
                r.split('|')
                    .map(|c| {
                        c.strip_prefix('\'')
                            .map_or_else(|| v(c), |t| Value::Text(t.into()))
                    })
                    .collect()
            })
            .collect(),
    }
}

fn ids(idx: &Index) -> Vec<String> {
    idx.samples
        .iter()
        .map(|s| {
            format!(
                "{} {} {} {}",
                s.meta.id(),
                s.meta.onset,
                s.meta.apex,
                s.meta.class
            )
        })
        .collect()
}

fn drops(idx: &Index) -> Vec<String> {
    idx.dropped.iter().map(|d| d.to_string()).collect()
}

const CASME1_HEADER: &str =
    "Subject|Filename||OnsetF|ApexF1|ApexF2|OffsetF||Onset|Total|AU|Emotion";

#[test]
fn casme1_combined_xls() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("CASME");
    let crop = root.join("Cropped");
    touch_frames(&crop.join("sub01/EP01_5"), "reg_EP01_5-", 113..=130);
    touch_frames(&crop.join("sub01/EP11"), "reg_EP11-", 61..=70);
    touch_frames(&crop.join("sub02/EP07_1"), "reg_EP07_1-", 1..=9);
    touch_frames(&crop.join("sub03/EP01_2"), "reg_EP01_2-", 10..=15); // apex 20 missing
    touch_frames(&crop.join("sub12/EP13_10"), "reg_EP13_10-", 40..=50);
    std::fs::write(crop.join("sub01/EP01_5/Thumbs.db"), b"x").unwrap();
    write_xls(
        &root.join("CASME-coded-20190721.xls"),
        &[sheet(
            "Sheet1",
            &[
                CASME1_HEADER,
                "1|EP01_5||113|121||130||133|283|12|happiness",
                "1|EP11||61|69|\\|70||83|150|4|sadness",
                "2|EP07_1||1|5||9||16|150|4|tense",
                "2|EP03_1||1|\\||9||16|150|4|disgust",
                "3|EP01_2||10|20||25||16|150|4|repression",
                "5|EP02_10||7|9||12||16|150|1+2|surprise",
                "12|EP13_10||40|45||50||16|150|14|comtempt",
                "12|EP13_11||40|45||50||16|150|14|amusement",
                "|||||||||||",
            ],
        )],
    )
    .unwrap();
    let idx = index_root(dir.path(), &IndexOptions::default()).unwrap();
    assert_eq!(
        ids(&idx),
        [
            "casme1/sub01/EP01_5 113 121 positive",
            "casme1/sub01/EP11 61 69 negative",
            "casme1/sub12/EP13_10 40 45 negative"
        ]
    );
    let wb = root.join("CASME-coded-20190721.xls").display().to_string();
    let d = drops(&idx);
    assert_eq!(d.len(), 5, "{d:#?}");
    assert_eq!(
        d[0],
        "casme1/sub02/EP07_1: emotion `tense` is outside the 3-class rule"
    );
    assert_eq!(
        d[1],
        format!("casme1/sub02/EP03_1: apex frame cell is text `\\` ({wb}, sheet `Sheet1`, row 5)")
    );
    assert!(
        d[2].starts_with("casme1/sub03/EP01_2: apex frame 20 missing: no reg_EP01_2-20.jpg in"),
        "{}",
        d[2]
    );
    assert!(
        d[3].starts_with("casme1/sub05/EP02_10: no frame folder"),
        "{}",
        d[3]
    );
    assert_eq!(d[4], "casme1/sub12/EP13_11: unknown emotion `amusement`");
    let s = &idx.samples[0];
    assert_eq!(s.onset_path, crop.join("sub01/EP01_5/reg_EP01_5-113.jpg"));
    assert_eq!(s.apex_path, crop.join("sub01/EP01_5/reg_EP01_5-121.jpg"));
}

#[test]
fn casme1_sections_and_missing_cropped_folder() {
    let dir = tempfile::tempdir().unwrap();
    let rows_a = [
        CASME1_HEADER,
        "1|EP01_5||113|121||130||133|283|12|happiness",
    ];
    let rows_b = [CASME1_HEADER, "8|EP12_2_1||30|35||40||133|283|12|surprise"];
    write_xls(
        &dir.path().join("Section A.xls"),
        &[sheet("Sheet1", &rows_a)],
    )
    .unwrap();
    write_xls(
        &dir.path().join("Section B.xls"),
        &[sheet("Sheet1", &rows_b)],
    )
    .unwrap();
    // No Cropped/ folder: every sample is dropped with the reason.
    let idx = index_root(dir.path(), &IndexOptions::default()).unwrap();
    assert!(idx.samples.is_empty());
    assert_eq!(idx.dropped.len(), 2);
    assert!(
        idx.dropped[1]
            .reason
            .starts_with("no frame folder beside the annotation"),
        "{}",
        idx.dropped[1]
    );
    touch_frames(
        &dir.path().join("Cropped/sub01/EP01_5"),
        "reg_EP01_5-",
        [113, 121],
    );
    touch_frames(
        &dir.path().join("Cropped/sub08/EP12_2_1"),
        "reg_EP12_2_1-",
        [30, 35],
    );
    let idx = index_root(dir.path(), &IndexOptions::default()).unwrap();
    assert_eq!(
        ids(&idx),
        [
            "casme1/sub01/EP01_5 113 121 positive",
            "casme1/sub08/EP12_2_1 30 35 surprise"
        ]
    );
}

const CASME2_HEADER: &str =
    "Subject|Filename||OnsetFrame|ApexFrame|OffsetFrame||Action Units|Estimated Emotion";

#[test]
fn casme2_xlsx_quirks() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("CASME2");
    let crop = root.join("Cropped");
    touch_frames(&crop.join("sub01/EP02_01f"), "reg_img", 46..=60);
    touch_frames(&crop.join("sub04/EP12_01f"), "reg_img", 1..=60);
    touch_frames(&crop.join("sub05/EP09_05f"), "reg_img", 1..=60);
    touch_frames(&crop.join("sub04/EP13_02f"), "reg_img", 1..=60);
    touch_frames(&crop.join("sub05/EP03_01"), "reg_img", 1..=60);
    std::fs::write(crop.join("sub01/EP02_01f.lnk"), b"shortcut").unwrap();
    std::fs::write(crop.join("sub01/EP02_01f/desktop.ini"), b"x").unwrap();
    write_xlsx(
        &root.join("CASME2-coding-20140508.xlsx"),
        &[sheet(
            "Sheet1",
            &[
                CASME2_HEADER,
                "1|EP02_01f||46|59|86||12|happiness",
                "'04|EP12_01f||1|/|50||4|disgust",
                "5|EP09_05f||20|20|30||4|repression",
                "'04|EP13_02f||'12|30|40||1+2|surprise",
                "5|EP03_01||1|10|30||4|others",
                "5|EP03_02||1|10|30||4|fear",
                "6|EP01_01||1|10|30||4|disgust",
            ],
        )],
    )
    .unwrap();
    let idx = index_root(dir.path(), &IndexOptions::default()).unwrap();
    assert_eq!(
        ids(&idx),
        [
            "casme2/sub01/EP02_01f 46 59 positive",
            "casme2/sub04/EP13_02f 12 30 surprise"
        ]
    );
    let wb = root
        .join("CASME2-coding-20140508.xlsx")
        .display()
        .to_string();
    let d = drops(&idx);
    assert_eq!(
        d[0],
        format!("casme2/sub04/EP12_01f: apex frame cell is text `/` ({wb}, sheet `Sheet1`, row 3)")
    );
    assert_eq!(d[1], "casme2/sub05/EP09_05f: onset equals apex (20)");
    assert_eq!(
        d[2],
        "casme2/sub05/EP03_01: emotion `others` is outside the 3-class rule"
    );
    assert_eq!(
        d[3],
        "casme2/sub05/EP03_02: emotion `fear` is outside the 3-class rule"
    );
    assert!(
        d[4].starts_with("casme2/sub06/EP01_01: no frame folder"),
        "{}",
        d[4]
    );
    assert_eq!(d.len(), 5);
}

#[test]
fn casme2_raw_frames() {
    let dir = tempfile::tempdir().unwrap();
    write_xlsx(
        &dir.path().join("CASME2-coding-20190701.xlsx"),
        &[sheet(
            "Sheet1",
            &[CASME2_HEADER, "1|EP02_01f||46|59|86||12|happiness"],
        )],
    )
    .unwrap();
    touch_frames(
        &dir.path().join("CASME2_RAW_selected/sub01/EP02_01f"),
        "img",
        [46, 59],
    );
    let opts = IndexOptions {
        source: FrameSource::Raw,
        ..Default::default()
    };
    let idx = index_root(dir.path(), &opts).unwrap();
    assert_eq!(ids(&idx), ["casme2/sub01/EP02_01f 46 59 positive"]);
    assert!(idx.samples[0]
        .apex_path
        .ends_with("CASME2_RAW_selected/sub01/EP02_01f/img59.jpg"));
}

fn casme_sq_workbook(path: &Path, expr_sheet: &str) {
    write_xlsx(
        path,
        &[
            sheet(
                expr_sheet,
                &[
                    "1|disgust1_3|552|559|570|4+7|surprise|micro-expression|disgust",
                    "1|happy4_5|100|105|110|12|positive|micro-expression|happy",
                    "1|anger1_1|10|20|0|4|negative|macro-expression|anger",
                    "2|anger1_4|963|967|980|4|negative|micro-expression|anger",
                    "2|happy1_1|5|9|12|12|others|micro-expression|happy",
                    "2|anger2_1|30|0|40|4|negative|micro-expression|anger",
                    "9|anger2_2|30|35|40|4|negative|micro-expression|anger",
                    "2|disgust2_1|5|9|12|9|negative|micro-expression|disgust",
                ],
            ),
            sheet("naming rule1", &["16|s16|1", "24|s24|2"]),
            sheet(
                "naming rule2",
                &[
                    "401|anger1",
                    "402|anger2",
                    "101|disgust1",
                    "102|disgust2",
                    "201|happy1",
                    "204|happy4",
                ],
            ),
        ],
    )
    .unwrap();
}

#[test]
fn casme_sq_headerless_sheets() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("CAS(ME)^2");
    casme_sq_workbook(&root.join("CAS(ME)^2code_final.xlsx"), "CASFEcode_final");
    let crop = root.join("cropped");
    touch_frames(&crop.join("16/disgust1_3"), "img", 550..=570);
    touch_frames(&crop.join("24/anger1_4"), "img", 960..=980);
    touch_frames(&crop.join("24/disgust2_1"), "img", [5]); // apex 9 missing
                                                           // happy4_5 has no cropped folder.
    let idx = index_root(dir.path(), &IndexOptions::default()).unwrap();
    assert_eq!(
        ids(&idx),
        [
            "casme^2/16/disgust1_3 552 559 surprise",
            "casme^2/24/anger1_4 963 967 negative"
        ]
    );
    let d = drops(&idx);
    assert!(
        d[0].starts_with("casme^2/16/happy4_5: no frame folder"),
        "{}",
        d[0]
    );
    assert_eq!(d[1], "casme^2/16/anger1_1: macro-expression");
    assert_eq!(
        d[2],
        "casme^2/24/happy1_1: emotion `others` is outside the 3-class rule"
    );
    let wb = root.join("CAS(ME)^2code_final.xlsx").display().to_string();
    assert_eq!(
        d[3],
        format!("casme^2/24/anger2_1: apex frame is 0 ({wb}, sheet `CASFEcode_final`, row 6)")
    );
    assert_eq!(d[4], format!("casme^2/participant 9/anger2_2: participant 9 is not in sheet `naming rule1` ({wb}, sheet `CASFEcode_final`, row 7)"));
    assert!(
        d[5].starts_with("casme^2/24/disgust2_1: apex frame 9 missing"),
        "{}",
        d[5]
    );
    assert_eq!(d.len(), 6);
}

#[test]
fn casme_sq_raw_zero_padded_frames() {
    let dir = tempfile::tempdir().unwrap();
    casme_sq_workbook(
        &dir.path().join("CAS(ME)^2code_final(Updated).xlsx"),
        "CASMEcode_final",
    );
    let raw = dir.path().join("rawpic/s16/16_0101disgustingteeth");
    std::fs::create_dir_all(&raw).unwrap();
    for n in [552, 559] {
        std::fs::write(raw.join(format!("img{n}.jpg")), b"").unwrap();
    }
    let raw4 = dir.path().join("rawpic/s16/16_0204happy");
    std::fs::create_dir_all(&raw4).unwrap();
    for n in ["img100.jpg", "img105.jpg", "img005.jpg", "img009.jpg"] {
        std::fs::write(raw4.join(n), b"").unwrap();
    }
    let opts = IndexOptions {
        source: FrameSource::Raw,
        ..Default::default()
    };
    let idx = index_root(dir.path(), &opts).unwrap();
    assert_eq!(
        ids(&idx),
        [
            "casme^2/16/disgust1_3 552 559 surprise",
            "casme^2/16/happy4_5 100 105 positive"
        ]
    );
    // 3-digit zero padding below 100
    let frames = scan_frames(&raw4, "img").unwrap();
    assert_eq!(frames.keys().copied().collect::<Vec<_>>(), [5, 9, 100, 105]);
    assert!(frames[&5].ends_with("img005.jpg"));
}

#[test]
fn combined_layout_and_sorting() {
    let dir = tempfile::tempdir().unwrap();
    let list = "Dataset,Subject,Sample,Onset,Apex,Class\n\
                casme2,sub01,EP19_05f,396,416,negative\n\
                casme^2,16,happy4_4,2285,2291,positive\n\
                casme1,sub01,EP01_5,113,121,positive\n\
                casme2,sub02,EP01_11f,46,91,negative\n";
    std::fs::write(dir.path().join("combined_3class.csv"), list).unwrap();
    touch_frames(
        &dir.path().join("casme1_cropped/sub01/EP01_5"),
        "reg_EP01_5-",
        [113, 121],
    );
    touch_frames(
        &dir.path().join("casme2_cropped/sub01/EP19_05f"),
        "reg_img",
        [396, 416],
    );
    touch_frames(
        &dir.path().join("casme^2_cropped/16/happy4_4"),
        "img",
        [2285, 2291],
    );
    touch_frames(
        &dir.path().join("casme2_cropped/sub02/EP01_11f"),
        "reg_img",
        [46],
    );
    let idx = index_root(dir.path(), &IndexOptions::default()).unwrap();
    assert_eq!(
        ids(&idx),
        [
            "casme1/sub01/EP01_5 113 121 positive",
            "casme^2/16/happy4_4 2285 2291 positive",
            "casme2/sub01/EP19_05f 396 416 negative"
        ]
    );
    assert!(drops(&idx)[0].starts_with("casme2/sub02/EP01_11f: apex frame 91 missing"));
    assert_eq!(idx.sources.len(), 3);
}

#[test]
fn duplicates_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["a", "b"] {
        let r = dir.path().join(sub);
        write_xlsx(
            &r.join("CASME2-coding-20140508.xlsx"),
            &[sheet(
                "Sheet1",
                &[CASME2_HEADER, "1|EP02_01f||46|59|86||12|happiness"],
            )],
        )
        .unwrap();
        touch_frames(&r.join("Cropped/sub01/EP02_01f"), "reg_img", [46, 59]);
    }
    let idx = index_root(dir.path(), &IndexOptions::default()).unwrap();
    assert_eq!(idx.samples.len(), 1);
    assert!(
        idx.dropped[0].reason.starts_with("duplicate"),
        "{}",
        idx.dropped[0]
    );
}

fn check_error(result: Result<Index>, expected: &str) {
    let e = result.unwrap_err().to_string();
    assert!(e.contains(expected), "error `{e}` lacks `{expected}`");
}

#[test]
fn bad_workbooks_give_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("CASME2-coding-20140508.xlsx");
    // missing column
    write_xlsx(
        &p,
        &[sheet(
            "Sheet1",
            &["Subject|Filename||OnsetFrame|OffsetFrame||Action Units|Estimated Emotion"],
        )],
    )
    .unwrap();
    check_error(
        index_casme2(&p, FrameSource::Cropped),
        &format!(
            "workbook {}, sheet `Sheet1`: no column `ApexFrame`",
            p.display()
        ),
    );
    // no header at all
    write_xlsx(
        &p,
        &[sheet("Sheet1", &["1|EP02_01f||46|59|86||12|happiness"])],
    )
    .unwrap();
    check_error(
        index_casme2(&p, FrameSource::Cropped),
        "no column `Subject`",
    );
    // truncated workbook
    let bytes = crate::workbook::xlsx_bytes(&[sheet("Sheet1", &[CASME2_HEADER])]).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    check_error(
        index_casme2(&p, FrameSource::Cropped),
        &format!("workbook {}: cannot open", p.display()),
    );
    // truncated xls
    let x = dir.path().join("CASME-coded-20190721.xls");
    let bytes = crate::workbook::xls_bytes(&[sheet("Sheet1", &[CASME1_HEADER])]).unwrap();
    std::fs::write(&x, &bytes[..700]).unwrap();
    check_error(
        index_casme1(&x, FrameSource::Cropped),
        &format!("workbook {}", x.display()),
    );
    // not a workbook at all
    std::fs::write(&x, b"not a spreadsheet").unwrap();
    check_error(
        index_casme1(&x, FrameSource::Cropped),
        &format!("workbook {}", x.display()),
    );
    // CAS(ME)^2 with too few columns, and without its naming sheet
    let c = dir.path().join("CAS(ME)^2code_final.xlsx");
    write_xlsx(
        &c,
        &[
            sheet("CASFEcode_final", &["1|a|1|2|3"]),
            sheet("naming rule1", &["16|s16|1"]),
        ],
    )
    .unwrap();
    check_error(
        index_casme_sq(&c, FrameSource::Cropped),
        "sheet `CASFEcode_final`: no column `column 6 of 8 (expression type)`",
    );
    write_xlsx(
        &c,
        &[sheet(
            "CASFEcode_final",
            &["1|a|1|2|3|4|negative|micro-expression"],
        )],
    )
    .unwrap();
    check_error(
        index_casme_sq(&c, FrameSource::Cropped),
        "no sheet `naming rule1`",
    );
    // nothing under the root
    let empty = tempfile::tempdir().unwrap();
    check_error(
        index_root(empty.path(), &IndexOptions::default()),
        "no database found under",
    );
}

#[test]
fn reference_list_through_the_combined_layout() {
    let Some(refdir) = reference_dir() else {
        return;
    };
    let reference = read_list(&refdir.join("combined_3class.csv")).unwrap();
    assert_eq!(reference.len(), 294);
    let counts = crate::list::class_counts(&reference);
    assert_eq!(counts[&Dataset::Casme1], [85, 10, 19]);
    assert_eq!(counts[&Dataset::Casme2], [88, 32, 25]);
    assert_eq!(counts[&Dataset::CasMeSquared], [21, 6, 8]);
    // A combined layout holding exactly the onset and apex frames of every reference row.
    let dir = tempfile::tempdir().unwrap();
    for m in &reference {
        let d = dir
            .path()
            .join(m.dataset.combined_folder())
            .join(&m.subject)
            .join(&m.sample);
        touch_frames(
            &d,
            &combined_prefix(m.dataset, &m.sample),
            [m.onset, m.apex],
        );
    }
    let opts = IndexOptions {
        combined_list: Some(refdir.join("combined_3class.csv")),
        ..Default::default()
    };
    let idx = index_root(dir.path(), &opts).unwrap();
    assert!(idx.dropped.is_empty(), "{:?}", idx.dropped);
    let derived = idx.list();
    assert!(compare_lists(&derived, &reference).is_identical());
    let mut sorted = reference.clone();
    sort_samples(&mut sorted);
    assert_eq!(derived, sorted);
    assert!(format_list(&derived).starts_with(
        "Dataset,Subject,Sample,Onset,Apex,Class\ncasme1,sub01,EP01_5,113,121,positive\n"
    ));
    // 49 LOSO subjects, in the reference's order of first appearance.
    let first = |l: &[SampleMeta]| {
        let mut v: Vec<(Dataset, String)> = Vec::new();
        for m in l {
            if !v.contains(&(m.dataset, m.subject.clone())) {
                v.push((m.dataset, m.subject.clone()));
            }
        }
        v
    };
    assert_eq!(first(&derived).len(), 49);
    assert_eq!(first(&derived), first(&reference));
}
