//! Indexers of the two databases the MEGC 2019 composite adds to CASME II: SAMM (its
//! `SAMM_Micro_FACS_Codes_v2.xlsx` workbook) and SMIC-HS (the original release, labels from
//! its folders), with MEGC's 3-class rules. `../shared/docs/megc2019-formats.md` documents
//! the layouts and their traps; every onset, apex and offset is checked against the frames
//! on disk, and every drop says why.
//!
//! Naming in the sample list: SAMM subjects are three digits (`006`, whether the workbook
//! holds the text `006` or the number 6), samples the workbook's `Filename` (`006_1_2`);
//! SMIC subjects are `s01` (the MEGC list's padding of the folder `s1`), samples the native
//! clip folder (`s1_ne_01`).
//!
//! [`Benchmark`] selects the databases of a benchmark under a root ([`index_benchmark`]);
//! [`read_published_list`] and [`compare_published`] compare the MEGC 2019 list with the
//! published 442-sample list in its own naming.
//!
//! Not yet here: the SMIC-E release (`SMIC-HS-E_annotation*.xlsx`, long clips) and apexes
//! spotted from the flow for SMIC.

use std::path::{Path, PathBuf};

use crate::index::{drop_row, find_beside, scan_frames, Index, IndexedSample, Layout, Source};
use crate::list::{Class, Dataset, SampleMeta};
use crate::sheet::{read_workbook, Cell};
use crate::{Error, Result};

/// MEGC 2019's SAMM rule: happiness -> positive; anger, contempt, disgust, fear, sadness ->
/// negative; surprise -> surprise; `Other`/`Others` and anything else dropped (case and
/// surrounding spaces ignored). `Err` is the drop reason.
pub fn samm_class(emotion: &str) -> Result<Class, String> {
    match emotion.trim().to_lowercase().as_str() {
        "happiness" => Ok(Class::Positive),
        "anger" | "contempt" | "disgust" | "fear" | "sadness" => Ok(Class::Negative),
        "surprise" => Ok(Class::Surprise),
        "other" | "others" => Err(format!(
            "emotion `{}` is not one of MEGC's three classes",
            emotion.trim()
        )),
        "" => Err("emotion cell is empty".into()),
        e => Err(format!("unknown emotion `{e}`")),
    }
}

/// The class of a SMIC emotion folder (`negative`, `positive`, `surprise`) or of the tag in
/// a clip name (`ne`, `po`, `sur`).
fn smic_class(word: &str) -> Option<Class> {
    match word.to_lowercase().as_str() {
        "negative" | "ne" => Some(Class::Negative),
        "positive" | "po" => Some(Class::Positive),
        "surprise" | "sur" => Some(Class::Surprise),
        _ => None,
    }
}

/// `006` from a subject cell holding `006`, `6` or the number 6.
fn samm_subject(cell: &Cell) -> Result<String, String> {
    let t = cell.text();
    t.parse::<u32>()
        .map(|n| format!("{n:03}"))
        .map_err(|_| format!("subject cell is `{t}`"))
}

fn frame(cell: &Cell, what: &str) -> Result<u32, String> {
    cell.integer().map_err(|e| format!("{what} frame cell {e}"))
}

/// The frame folder of SAMM beside (or around) the workbook: `SAMM/`, `SAMM_CROP/` or
/// `SAMM_cropped/` in the workbook's folder or its parent, else the workbook's own folder
/// when it holds the subject folders (a `SAMM_CROP` copy with the workbook inside).
fn samm_frames(workbook: &Path) -> Option<PathBuf> {
    find_beside(workbook, &["SAMM", "SAMM_CROP", "SAMM_cropped", "samm"]).or_else(|| {
        let dir = workbook.parent()?;
        let has_subjects = std::fs::read_dir(dir).ok()?.flatten().any(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.len() == 3 && n.bytes().all(|b| b.is_ascii_digit()) && e.path().is_dir()
        });
        has_subjects.then(|| dir.to_path_buf())
    })
}

/// Checks onset <= apex <= offset, onset < offset, and that the three frames are in the
/// folder's frames; the error is a drop reason.
fn check_frames(
    meta: SampleMeta,
    offset: u32,
    dir: &Path,
    frames: &std::collections::BTreeMap<u32, PathBuf>,
    pattern: &str,
) -> Result<IndexedSample, String> {
    let (on, ap) = (meta.onset, meta.apex);
    if offset <= on {
        return Err(format!("offset {offset} is not after onset {on}"));
    }
    if ap < on || ap > offset {
        return Err(format!("apex {ap} is outside onset-offset {on}-{offset}"));
    }
    if ap == on {
        return Err(format!("onset equals apex ({ap})"));
    }
    let get = |n: u32, what: &str| {
        frames.get(&n).cloned().ok_or_else(|| {
            format!(
                "{what} frame {n} missing: no {pattern} with number {n} in {} ({} frames there)",
                dir.display(),
                frames.len()
            )
        })
    };
    let onset_path = get(on, "onset")?;
    let apex_path = get(ap, "apex")?;
    get(offset, "offset")?;
    Ok(IndexedSample {
        meta,
        dir: dir.to_path_buf(),
        onset_path,
        apex_path,
    })
}

/// Indexes SAMM's `SAMM_Micro_FACS_Codes_v2.xlsx` (its first sheet, `MICRO_ONLY`): the
/// preamble rows are skipped (the header is the first of the first 20 rows starting with
/// `Subject`), data rows end at the first row without a subject. Frames:
/// `SAMM/<sub3>/<Filename>/<sub3>_<N>.jpg`, N zero-padded to a width that varies from clip
/// to clip (the number is parsed, never rebuilt).
pub fn index_samm(workbook: &Path) -> Result<Index> {
    const DS: Dataset = Dataset::Samm;
    let sheets = read_workbook(workbook)?;
    let sheet = sheets
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case("MICRO_ONLY"))
        .or_else(|| sheets.first())
        .ok_or_else(|| Error::Invalid(format!("{}: no sheet", workbook.display())))?;
    let (header, cols) = sheet.header_columns(&[
        &["Subject"],
        &["Filename"],
        &["Onset Frame", "Onset"],
        &["Apex Frame", "Apex"],
        &["Offset Frame", "Offset"],
        &["Estimated Emotion", "Emotion"],
    ])?;
    let root = samm_frames(workbook);
    let mut idx = Index::default();
    for r in header + 1..sheet.rows.len() {
        let cell = |c: usize| sheet.cell(r, cols[c]);
        if cell(0).is_empty() {
            break; // trailing rows of the used range
        }
        let name = cell(1).text();
        let subject = match samm_subject(cell(0)) {
            Ok(s) => s,
            Err(e) => {
                idx.dropped.push(drop_row(
                    DS,
                    cell(0).text(),
                    &name,
                    format!("{}: {e}", sheet.at(r)),
                ));
                continue;
            }
        };
        let parsed = (|| {
            let class = samm_class(&cell(5).text())?;
            let onset = frame(cell(2), "onset")?;
            let apex = frame(cell(3), "apex")?;
            let offset = frame(cell(4), "offset")?;
            Ok::<_, String>((class, onset, apex, offset))
        })();
        let (class, onset, apex, offset) = match parsed {
            Ok(v) => v,
            Err(e) => {
                idx.dropped.push(drop_row(
                    DS,
                    &subject,
                    &name,
                    format!("{e} ({})", sheet.at(r)),
                ));
                continue;
            }
        };
        let Some(root) = &root else {
            idx.dropped.push(drop_row(
                DS,
                &subject,
                &name,
                format!("no SAMM frame folder beside {}", workbook.display()),
            ));
            continue;
        };
        let dir = root.join(&subject).join(&name);
        if !dir.is_dir() {
            idx.dropped.push(drop_row(
                DS,
                &subject,
                &name,
                format!("no frame folder: {}", dir.display()),
            ));
            continue;
        }
        let prefix = format!("{subject}_");
        let frames = scan_frames(&dir, &prefix)?;
        let meta = SampleMeta {
            dataset: DS,
            subject: subject.clone(),
            sample: name.clone(),
            onset,
            apex,
            class,
        };
        match check_frames(meta, offset, &dir, &frames, &format!("{prefix}<N>.jpg")) {
            Ok(s) => idx.samples.push(s),
            Err(e) => idx.dropped.push(drop_row(DS, &subject, &name, e)),
        }
    }
    idx.sources.push(Source {
        dataset: DS,
        layout: Layout::Native,
        annotation: workbook.to_path_buf(),
        frames: root,
    });
    idx.samples.sort_by_cached_key(|s| s.meta.key());
    Ok(idx)
}

/// How SMIC's apex (not annotated) is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SmicApex {
    /// The middle frame: `onset + floor((offset - onset) / 2)` (meb's rule), or the last
    /// frame on disk before it where the counter has a gap. Reproducible.
    #[default]
    Middle,
    /// Spotted from the flow ([`crate::spot::spot_apex`]): the frame between onset and
    /// offset whose TV-L1 flow from the onset (at 112 x 112) has the largest mean optical
    /// strain. Computes one flow per frame of every clip.
    Spotted,
}

impl std::str::FromStr for SmicApex {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "middle" => Ok(SmicApex::Middle),
            "spotted" => Ok(SmicApex::Spotted),
            _ => Err(format!("SMIC apex rule `{s}`: expected middle or spotted")),
        }
    }
}

/// Indexes the HS part of the original SMIC release: `HS/s<n>/micro/<emotion>/<clip>/`
/// with frames `image<N>.bmp` (raw) or `reg_image<N>.bmp` (cropped), N the camera's
/// counter (6 to 8 digits). The label is the emotion folder (the clip name's tag must
/// agree); onset and offset are the clip's first and last frames; the apex follows
/// `apex`. `non_micro/` folders are skipped. `hs` is the `HS` folder.
pub fn index_smic(hs: &Path, apex: SmicApex) -> Result<Index> {
    const DS: Dataset = Dataset::Smic;
    let mut idx = Index::default();
    let list = |d: &Path| -> Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .map_err(|e| Error::io(d, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        v.sort_by(|a, b| {
            mer_common::names::natural_cmp(
                &a.file_name().unwrap_or_default().to_string_lossy(),
                &b.file_name().unwrap_or_default().to_string_lossy(),
            )
        });
        Ok(v)
    };
    for sub_dir in list(hs)? {
        let folder = sub_dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let Some(n) = folder.strip_prefix('s').and_then(|d| d.parse::<u32>().ok()) else {
            continue; // not a subject folder
        };
        let subject = format!("s{n:02}");
        let micro = sub_dir.join("micro");
        if !micro.is_dir() {
            continue;
        }
        for emo_dir in list(&micro)? {
            let emo = emo_dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            for clip_dir in list(&emo_dir)? {
                let clip = clip_dir
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                let Some(class) = smic_class(&emo) else {
                    idx.dropped.push(drop_row(
                        DS,
                        &subject,
                        &clip,
                        format!("emotion folder `{emo}` is not negative, positive or surprise"),
                    ));
                    continue;
                };
                let tag = clip.split('_').nth(1).and_then(smic_class);
                if tag.is_some_and(|t| t != class) {
                    idx.dropped.push(drop_row(
                        DS,
                        &subject,
                        &clip,
                        format!(
                            "the folder says {emo}, the clip name `{clip}` says {}",
                            tag.map_or("?", |t| t.name())
                        ),
                    ));
                    continue;
                }
                let mut frames = scan_frames(&clip_dir, "reg_image")?;
                if frames.is_empty() {
                    frames = scan_frames(&clip_dir, "image")?;
                }
                let (Some((&onset, onset_path)), Some((&offset, _))) =
                    (frames.first_key_value(), frames.last_key_value())
                else {
                    idx.dropped.push(drop_row(
                        DS,
                        &subject,
                        &clip,
                        format!("no frames (image<N>.bmp) in {}", clip_dir.display()),
                    ));
                    continue;
                };
                if onset == offset {
                    idx.dropped.push(drop_row(
                        DS,
                        &subject,
                        &clip,
                        format!("one frame only ({onset}): no motion to measure"),
                    ));
                    continue;
                }
                let apex_n = smic_apex_frame(apex, &frames, onset, offset)?;
                let onset_path = onset_path.clone();
                let apex_path = frames[&apex_n].clone();
                idx.samples.push(IndexedSample {
                    meta: SampleMeta {
                        dataset: DS,
                        subject: subject.clone(),
                        sample: clip.clone(),
                        onset,
                        apex: apex_n,
                        class,
                    },
                    dir: clip_dir.clone(),
                    onset_path,
                    apex_path,
                });
            }
        }
    }
    idx.sources.push(Source {
        dataset: DS,
        layout: Layout::Native,
        annotation: hs.to_path_buf(),
        frames: Some(hs.to_path_buf()),
    });
    idx.samples.sort_by_cached_key(|s| s.meta.key());
    Ok(idx)
}

/// SMIC's apex frame between `onset` and `offset` (both in `frames`) by `rule`.
fn smic_apex_frame(
    rule: SmicApex,
    frames: &std::collections::BTreeMap<u32, PathBuf>,
    onset: u32,
    offset: u32,
) -> Result<u32> {
    Ok(match rule {
        SmicApex::Middle => {
            let target = onset + (offset - onset) / 2;
            let below = frames
                .range(onset..=target)
                .next_back()
                .map_or(onset, |(n, _)| *n);
            if below == onset {
                // A gap right after the onset: the next frame on disk.
                frames
                    .range(onset + 1..=offset)
                    .next()
                    .map_or(offset, |(n, _)| *n)
            } else {
                below
            }
        }
        SmicApex::Spotted => {
            let clip: Vec<(u32, PathBuf)> = frames
                .range(onset..=offset)
                .map(|(n, p)| (*n, p.clone()))
                .collect();
            crate::spot::spot_apex(
                &clip,
                crate::preprocess::FEATURE_SIZE,
                mer_flow::strain::StrainFormula::Paper,
            )?
            .apex
        }
    })
}

/// The frame folder of the SMIC-HS-E release for its workbook: `SMIC-HS-E/` beside the
/// workbook (or its folder's parent), with or without an `HS/` level, or the workbook's
/// own folder when it holds the subject folders (`s01`, ...).
fn smic_e_frames(workbook: &Path) -> Option<PathBuf> {
    let base = find_beside(workbook, &["SMIC-HS-E", "SMIC-HS-E_raw", "HS_long"]).or_else(|| {
        let dir = workbook.parent()?;
        dir.join("s01").is_dir().then(|| dir.to_path_buf())
    })?;
    for cand in [base.join("SMIC-HS-E"), base.join("HS"), base.clone()] {
        if std::fs::read_dir(&cand).is_ok_and(|rd| {
            rd.flatten().any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with('s') && n[1..].parse::<u32>().is_ok() && e.path().is_dir()
            })
        }) {
            return Some(cand);
        }
    }
    None
}

/// Indexes the SMIC-HS-E release (long clips): the workbook
/// `SMIC-HS-E_annotation*.xlsx` (sheet `HS`, header in row 1: `Subject` (a number),
/// `Filename` (`s20_ne_01`), `OnsetF`, `OffsetF`, ..., `Emotion`; both the original and the
/// later column layout, found by name) with frames `SMIC-HS-E/[HS/]s01/s1_ne_01/image<N>.jpg`
/// (subject folders zero-padded, clip folders not, N the camera counter, parsed). Rows end
/// at the first without a subject. The label comes from the clip name's tag (`s18_sur_03`'s
/// `Emotion` cell says negative; MEGC, the folder and the name say surprise), the `Emotion`
/// cell only where the name has none; onset and offset from the workbook, checked against
/// the frames on disk (`s1_ne_03`'s `LastF` is before its `OffsetF`), the apex by `apex`.
/// Text in columns not read (`FirstF` = `MISSING <-426679`) does not matter.
pub fn index_smic_e(workbook: &Path, apex: SmicApex) -> Result<Index> {
    const DS: Dataset = Dataset::Smic;
    let sheets = read_workbook(workbook)?;
    let sheet = sheets
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case("HS"))
        .or_else(|| sheets.first())
        .ok_or_else(|| Error::Invalid(format!("{}: no sheet", workbook.display())))?;
    let (header, cols) = sheet.header_columns(&[
        &["Subject"],
        &["Filename"],
        &["OnsetF", "Onset"],
        &["OffsetF", "Offset"],
        &["Emotion"],
    ])?;
    let root = smic_e_frames(workbook);
    let mut idx = Index::default();
    for r in header + 1..sheet.rows.len() {
        let cell = |c: usize| sheet.cell(r, cols[c]);
        if cell(0).is_empty() {
            break; // valueless rows at the end of the used range
        }
        let clip = cell(1).text();
        let subject = match cell(0).text().trim_start_matches('s').parse::<u32>() {
            Ok(n) => format!("s{n:02}"),
            Err(_) => {
                idx.dropped.push(drop_row(
                    DS,
                    cell(0).text(),
                    &clip,
                    format!("{}: subject cell is `{}`", sheet.at(r), cell(0).text()),
                ));
                continue;
            }
        };
        let sample = clip.clone();
        let parsed = (|| {
            let class = clip
                .split('_')
                .nth(1)
                .and_then(smic_class)
                .or_else(|| smic_class(cell(4).text().trim()))
                .ok_or_else(|| {
                    format!(
                        "neither the name `{clip}` nor the emotion cell `{}` is negative, positive or surprise",
                        cell(4).text()
                    )
                })?;
            let onset = frame(cell(2), "onset")?;
            let offset = frame(cell(3), "offset")?;
            Ok::<_, String>((class, onset, offset))
        })();
        let (class, onset, offset) = match parsed {
            Ok(v) => v,
            Err(e) => {
                idx.dropped.push(drop_row(
                    DS,
                    &subject,
                    &sample,
                    format!("{e} ({})", sheet.at(r)),
                ));
                continue;
            }
        };
        let Some(root) = &root else {
            idx.dropped.push(drop_row(
                DS,
                &subject,
                &sample,
                format!("no SMIC-HS-E frame folder beside {}", workbook.display()),
            ));
            continue;
        };
        let sub_dir = [
            subject.clone(),
            format!("s{}", &subject[1..].trim_start_matches('0')),
        ]
        .into_iter()
        .map(|s| root.join(s))
        .find(|d| d.is_dir());
        let dir = match sub_dir.map(|d| d.join(&clip)) {
            Some(d) if d.is_dir() => d,
            other => {
                idx.dropped.push(drop_row(
                    DS,
                    &subject,
                    &sample,
                    format!(
                        "no frame folder: {}",
                        other
                            .unwrap_or_else(|| root.join(&subject).join(&clip))
                            .display()
                    ),
                ));
                continue;
            }
        };
        let frames = scan_frames(&dir, "image")?;
        let apex_n = if offset > onset && frames.contains_key(&onset) {
            smic_apex_frame(apex, &frames, onset, offset)?
        } else {
            onset
        };
        let meta = SampleMeta {
            dataset: DS,
            subject: subject.clone(),
            sample: sample.clone(),
            onset,
            apex: apex_n,
            class,
        };
        match check_frames(meta, offset, &dir, &frames, "image<N>.jpg") {
            Ok(s) => idx.samples.push(s),
            Err(e) => idx.dropped.push(drop_row(
                DS,
                &subject,
                &sample,
                format!("{e} ({})", sheet.at(r)),
            )),
        }
    }
    idx.sources.push(Source {
        dataset: DS,
        layout: Layout::Native,
        annotation: workbook.to_path_buf(),
        frames: root,
    });
    idx.samples.sort_by_cached_key(|s| s.meta.key());
    Ok(idx)
}

/// A benchmark: which databases, under which rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Benchmark {
    /// The Off-TANet paper's: CASME, CAS(ME)^2 and CASME II (294 samples on the real data).
    #[default]
    OffTanet,
    /// MEGC 2019's composite: SMIC-HS, CASME II and SAMM with MEGC's rules (442 samples).
    Megc2019,
}

impl std::str::FromStr for Benchmark {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "offtanet" => Ok(Benchmark::OffTanet),
            "megc2019" => Ok(Benchmark::Megc2019),
            _ => Err(format!("benchmark `{s}`: expected offtanet or megc2019")),
        }
    }
}

/// What [`discover_megc`] found: SMIC `HS` folders and SAMM workbooks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FoundMegc {
    /// `HS` folders of the original SMIC release (cropped preferred to raw).
    pub smic_hs: Vec<PathBuf>,
    /// SAMM FACS-codes workbooks.
    pub samm: Vec<PathBuf>,
    /// SMIC-HS-E workbooks (`SMIC-HS-E_annotation*.xlsx`), used where no original `HS`
    /// release is found (the E release lacks 5 to 7 of the 164 clips MEGC needs).
    pub smic_e: Vec<PathBuf>,
}

impl FoundMegc {
    /// Indexes the SMIC found: the original release's `HS` folders, else the SMIC-HS-E
    /// workbooks.
    pub fn index_smic(&self, apex: SmicApex) -> Result<Index> {
        let mut idx = Index::default();
        if self.smic_hs.is_empty() {
            for p in &self.smic_e {
                idx.merge(index_smic_e(p, apex)?);
            }
        } else {
            for p in &self.smic_hs {
                idx.merge(index_smic(p, apex)?);
            }
        }
        Ok(idx)
    }
}

/// Finds SMIC-HS and SAMM under `root` (5 levels deep): an `HS` folder inside a folder whose
/// name starts with `SMIC` and holds `s<n>/micro/`; a workbook named
/// `SMIC-HS-E_annotation*.xlsx` (the E release; of `_orig` and the later one, the later);
/// a workbook named `SAMM*Micro_FACS_Codes*.xlsx`. Of `SMIC_all_cropped` and `SMIC_all_raw` side by side,
/// the cropped one is taken.
pub fn discover_megc(root: &Path) -> Result<FoundMegc> {
    let mut found = FoundMegc::default();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_string();
            let lower = name.to_lowercase();
            if p.is_dir() {
                let parent = dir
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("")
                    .to_lowercase();
                let is_hs = name == "HS"
                    && parent.starts_with("smic")
                    && std::fs::read_dir(&p)
                        .is_ok_and(|rd| rd.flatten().any(|e| e.path().join("micro").is_dir()));
                if is_hs {
                    found.smic_hs.push(p);
                } else if depth < 5 && !name.starts_with('.') {
                    stack.push((p, depth + 1));
                }
            } else if lower.starts_with("samm")
                && lower.contains("micro_facs_codes")
                && lower.ends_with(".xlsx")
                && !name.starts_with("~$")
            {
                found.samm.push(p);
            } else if lower.starts_with("smic-hs-e_annotation")
                && lower.ends_with(".xlsx")
                && !name.starts_with("~$")
            {
                found.smic_e.push(p);
            }
        }
    }
    found.smic_hs.sort();
    found.samm.sort();
    found.smic_e.sort();
    // Two versions of the E workbook side by side (`_orig` and the later one): the later.
    if found.smic_e.len() > 1 {
        found
            .smic_e
            .retain(|p| !p.to_string_lossy().to_lowercase().contains("_orig"));
    }
    // Cropped beside raw: keep the cropped copy of each release folder.
    let cropped: Vec<PathBuf> = found
        .smic_hs
        .iter()
        .filter(|p| p.to_string_lossy().to_lowercase().contains("cropped"))
        .cloned()
        .collect();
    if !cropped.is_empty() {
        found.smic_hs = cropped;
    }
    Ok(found)
}

/// Indexes the databases of `benchmark` under `root`. For MEGC 2019: CASME II (its rules
/// are the same as Off-TANet's: 145 samples on the real data), SMIC-HS and SAMM; a database
/// that is absent is simply not in the index (its sources say what was found).
pub fn index_benchmark(
    root: &Path,
    benchmark: Benchmark,
    opts: &crate::index::IndexOptions,
    smic_apex: SmicApex,
) -> Result<Index> {
    match benchmark {
        Benchmark::OffTanet => crate::index::index_root(root, opts),
        Benchmark::Megc2019 => {
            let casme = crate::index::discover(root)?;
            let megc = discover_megc(root)?;
            if casme.casme2.is_empty()
                && megc.smic_hs.is_empty()
                && megc.smic_e.is_empty()
                && megc.samm.is_empty()
            {
                return Err(Error::NoDatabase {
                    root: root.to_path_buf(),
                });
            }
            let mut idx = Index::default();
            for p in &casme.casme2 {
                idx.merge(crate::index::index_casme2(p, opts.source)?);
            }
            idx.merge(megc.index_smic(smic_apex)?);
            for p in &megc.samm {
                idx.merge(index_samm(p)?);
            }
            Ok(idx.finish())
        }
    }
}

/// Indexes what holds `datasets` under `root`: the Off-TANet three through
/// [`crate::index::index_root`], SMIC-HS and SAMM through [`discover_megc`] (the feature
/// pipeline looks up a list's samples so, whatever benchmark made the list).
pub fn index_datasets(
    root: &Path,
    datasets: &[Dataset],
    opts: &crate::index::IndexOptions,
) -> Result<Index> {
    let casme = datasets.iter().any(|d| Dataset::ALL.contains(d));
    let mut idx = if casme {
        crate::index::index_root(root, opts)?
    } else {
        Index::default()
    };
    if datasets
        .iter()
        .any(|d| matches!(d, Dataset::Smic | Dataset::Samm))
    {
        let megc = discover_megc(root)?;
        if datasets.contains(&Dataset::Smic) {
            idx.merge(megc.index_smic(SmicApex::Middle)?);
        }
        if datasets.contains(&Dataset::Samm) {
            for p in &megc.samm {
                idx.merge(index_samm(p)?);
            }
        }
    }
    Ok(idx.finish())
}

/// A row of the published MEGC 2019 list, normalised: (dataset, subject, clip, class) with
/// subjects `sub01` / `s01` / `006` and clips `EP02_01f` / `s01_ne_01` / `006_1_2`.
pub type PublishedRow = (Dataset, String, String, Class);

fn normalise_samm_subject(s: &str) -> String {
    s.trim()
        .parse::<u32>()
        .map_or(s.trim().to_string(), |n| format!("{n:03}"))
}

/// `s01` from `s1` or `s01`; `s01_ne_01` from `s1_ne_01`.
fn normalise_smic(subject_or_clip: &str) -> String {
    let t = subject_or_clip.trim();
    let (head, rest) = t.split_once('_').map_or((t, None), |(h, r)| (h, Some(r)));
    let head = head
        .strip_prefix('s')
        .and_then(|d| d.parse::<u32>().ok())
        .map_or(head.to_string(), |n| format!("s{n:02}"));
    match rest {
        Some(r) => format!("{head}_{r}"),
        None => head,
    }
}

/// Reads the published 442-sample list (`combined_3class_gt.csv`: no header, CRLF or LF,
/// `dataset,subject,clip,label` with labels 0/1/2; a header line `data,...` or
/// `dataset,...` is skipped), normalising the names as the formats doc says.
pub fn read_published_list(path: &Path) -> Result<Vec<PublishedRow>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start_matches('\u{feff}').trim();
        if line.is_empty() || (i == 0 && line.to_lowercase().starts_with("data")) {
            continue;
        }
        let bad = |m: String| Error::Csv {
            path: path.to_path_buf(),
            line: i + 1,
            message: m,
        };
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() < 4 {
            return Err(bad(format!(
                "expected dataset,subject,clip,label, found `{line}`"
            )));
        }
        let (dataset, subject, clip) = match f[0].to_lowercase().as_str() {
            "casme2" | "casmeii" => (Dataset::Casme2, f[1].to_string(), f[2].to_string()),
            "smic" => (Dataset::Smic, normalise_smic(f[1]), normalise_smic(f[2])),
            "samm" => (
                Dataset::Samm,
                normalise_samm_subject(f[1]),
                f[2].to_string(),
            ),
            d => return Err(bad(format!("dataset `{d}`: expected casme2, smic or samm"))),
        };
        let class = match f[3] {
            "0" => Class::Negative,
            "1" => Class::Positive,
            "2" => Class::Surprise,
            l => return Err(bad(format!("label `{l}`: expected 0, 1 or 2"))),
        };
        out.push((dataset, subject, clip, class));
    }
    Ok(out)
}

/// Our samples in the published list's naming.
pub fn published_names(samples: &[SampleMeta]) -> Vec<PublishedRow> {
    samples
        .iter()
        .map(|s| match s.dataset {
            Dataset::Smic => (
                s.dataset,
                normalise_smic(&s.subject),
                normalise_smic(&s.sample),
                s.class,
            ),
            Dataset::Samm => (
                s.dataset,
                normalise_samm_subject(&s.subject),
                s.sample.clone(),
                s.class,
            ),
            _ => (s.dataset, s.subject.clone(), s.sample.clone(), s.class),
        })
        .collect()
}

/// How a derived list differs from the published one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishedComparison {
    /// Rows in both with the same label.
    pub same: usize,
    /// Ours only.
    pub only_ours: Vec<PublishedRow>,
    /// The published list's only.
    pub only_published: Vec<PublishedRow>,
    /// In both with different labels: (ours, published).
    pub label_differs: Vec<(PublishedRow, PublishedRow)>,
}

/// Compares on (dataset, subject, clip), then the label.
pub fn compare_published(ours: &[SampleMeta], published: &[PublishedRow]) -> PublishedComparison {
    let key = |r: &PublishedRow| (r.0, r.1.clone(), r.2.clone());
    let mine = published_names(ours);
    let theirs: std::collections::HashMap<_, &PublishedRow> =
        published.iter().map(|r| (key(r), r)).collect();
    let mine_keys: std::collections::HashSet<_> = mine.iter().map(key).collect();
    let mut c = PublishedComparison::default();
    for r in &mine {
        match theirs.get(&key(r)) {
            Some(p) if p.3 == r.3 => c.same += 1,
            Some(p) => c.label_differs.push((r.clone(), (*p).clone())),
            None => c.only_ours.push(r.clone()),
        }
    }
    c.only_published = published
        .iter()
        .filter(|r| !mine_keys.contains(&key(r)))
        .cloned()
        .collect();
    c
}

/// The comparison as text: counts, then every differing row.
pub fn format_published_comparison(c: &PublishedComparison) -> String {
    let row = |r: &PublishedRow| format!("{},{},{},{}", r.0, r.1, r.2, r.3.name());
    let mut s = format!(
        "{} the same, {} only in ours, {} only in the published list, {} with another label\n",
        c.same,
        c.only_ours.len(),
        c.only_published.len(),
        c.label_differs.len()
    );
    for r in &c.only_ours {
        s.push_str(&format!("  only ours:      {}\n", row(r)));
    }
    for r in &c.only_published {
        s.push_str(&format!("  only published: {}\n", row(r)));
    }
    for (a, b) in &c.label_differs {
        s.push_str(&format!(
            "  label:          {} (published {})\n",
            row(a),
            b.3.name()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn megc_class_rules() {
        assert_eq!(samm_class("Happiness"), Ok(Class::Positive));
        for e in ["Anger", "contempt", " Disgust ", "FEAR", "Sadness"] {
            assert_eq!(samm_class(e), Ok(Class::Negative), "{e}");
        }
        assert_eq!(samm_class("Surprise"), Ok(Class::Surprise));
        assert!(samm_class("Other")
            .unwrap_err()
            .contains("not one of MEGC's"));
        assert!(samm_class("others")
            .unwrap_err()
            .contains("not one of MEGC's"));
        assert!(samm_class("Joy")
            .unwrap_err()
            .contains("unknown emotion `joy`"));
        assert_eq!(smic_class("sur"), Some(Class::Surprise));
        assert_eq!(smic_class("positive"), Some(Class::Positive));
        assert_eq!(smic_class("xx"), None);
    }

    #[test]
    fn published_list_names_are_normalised_and_compared() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("combined_3class_gt.csv");
        std::fs::write(
            &p,
            "casme2,sub01,EP02_01f,1\r\nsmic,s01,s01_ne_01,0\r\nsamm,6,006_1_2,0\r\nsamm,7,007_3_1,2\r\nsmic,s02,s02_po_02,1\r\n",
        )
        .unwrap();
        let published = read_published_list(&p).unwrap();
        assert_eq!(
            published[1],
            (
                Dataset::Smic,
                "s01".into(),
                "s01_ne_01".into(),
                Class::Negative
            )
        );
        assert_eq!(published[2].1, "006");
        let m = |d, sub: &str, sam: &str, class| SampleMeta {
            dataset: d,
            subject: sub.into(),
            sample: sam.into(),
            onset: 1,
            apex: 2,
            class,
        };
        let ours = vec![
            m(Dataset::Casme2, "sub01", "EP02_01f", Class::Positive),
            m(Dataset::Smic, "s01", "s1_ne_01", Class::Negative),
            m(Dataset::Samm, "006", "006_1_2", Class::Negative),
            m(Dataset::Samm, "007", "007_3_1", Class::Positive),
            m(Dataset::Samm, "011", "011_2_3", Class::Negative),
        ];
        let c = compare_published(&ours, &published);
        assert_eq!(c.same, 3);
        assert_eq!(c.only_ours.len(), 1);
        assert_eq!(c.only_published[0].2, "s02_po_02");
        assert_eq!(c.label_differs.len(), 1);
        let text = format_published_comparison(&c);
        assert!(
            text.starts_with(
                "3 the same, 1 only in ours, 1 only in the published list, 1 with another label"
            ),
            "{text}"
        );
        std::fs::write(&p, "samm,6,006_1_2,5\n").unwrap();
        let e = read_published_list(&p).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("label `5`"), "{e}");
    }
}
