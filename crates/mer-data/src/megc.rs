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
//! Not yet here: the SMIC-E release (`SMIC-HS-E_annotation*.xlsx`, long clips), apexes
//! spotted from the flow for SMIC, and a benchmark selection that puts these beside CASME II
//! in `index_root`.

use std::path::{Path, PathBuf};

use crate::index::{scan_frames, Index, IndexedSample, Layout, Source};
use crate::list::{Class, Dataset, Dropped, SampleMeta};
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

fn dropped(dataset: Dataset, subject: &str, sample: &str, reason: impl Into<String>) -> Dropped {
    Dropped {
        dataset,
        subject: subject.to_string(),
        sample: sample.to_string(),
        reason: reason.into(),
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
    let dir = workbook.parent()?;
    let mut bases = vec![dir.to_path_buf()];
    if let Some(p) = dir.parent() {
        bases.push(p.to_path_buf());
    }
    let named = bases
        .iter()
        .flat_map(|b| {
            ["SAMM", "SAMM_CROP", "SAMM_cropped", "samm"]
                .iter()
                .map(move |n| b.join(n))
        })
        .find(|p| p.is_dir());
    named.or_else(|| {
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
                idx.dropped.push(dropped(
                    DS,
                    &cell(0).text(),
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
                idx.dropped.push(dropped(DS, &subject, &name, e));
                continue;
            }
        };
        let Some(root) = &root else {
            idx.dropped.push(dropped(
                DS,
                &subject,
                &name,
                format!("no SAMM frame folder beside {}", workbook.display()),
            ));
            continue;
        };
        let dir = root.join(&subject).join(&name);
        if !dir.is_dir() {
            idx.dropped.push(dropped(
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
            Err(e) => idx.dropped.push(dropped(DS, &subject, &name, e)),
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
                    idx.dropped.push(dropped(
                        DS,
                        &subject,
                        &clip,
                        format!("emotion folder `{emo}` is not negative, positive or surprise"),
                    ));
                    continue;
                };
                let tag = clip.split('_').nth(1).and_then(smic_class);
                if tag.is_some_and(|t| t != class) {
                    idx.dropped.push(dropped(
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
                    idx.dropped.push(dropped(
                        DS,
                        &subject,
                        &clip,
                        format!("no frames (image<N>.bmp) in {}", clip_dir.display()),
                    ));
                    continue;
                };
                if onset == offset {
                    idx.dropped.push(dropped(
                        DS,
                        &subject,
                        &clip,
                        format!("one frame only ({onset}): no motion to measure"),
                    ));
                    continue;
                }
                let apex_n = match apex {
                    SmicApex::Middle => {
                        let target = onset + (offset - onset) / 2;
                        let below = *frames
                            .range(..=target)
                            .next_back()
                            .expect("onset <= target")
                            .0;
                        if below == onset {
                            // A gap right after the onset: the next frame on disk.
                            *frames.range(onset + 1..).next().expect("offset > onset").0
                        } else {
                            below
                        }
                    }
                };
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
}
