//! Indexers of the databases' native releases and of the reference's combined layout.
//!
//! Each database is found under a root folder by its annotation file's name
//! (`CASME-coded-*.xls` or `Section A.xls`/`Section B.xls`, `CASME2-coding-*.xlsx`,
//! `CAS(ME)^2code_final*.xlsx`) with its frames beside it (`Cropped/`, `cropped/`;
//! raw: `CASME2_RAW_selected/`, `rawpic/`); the combined layout by its
//! `casme1_cropped/`, `casme2_cropped/`, `casme^2_cropped/` folders and a list CSV.
//! Rows become 3-class samples by the rules of `dataset-formats.md`; every onset and apex
//! frame is checked on disk; what cannot be used is dropped with a reason.

use crate::list::{read_list, Class, Dataset, Dropped, SampleKey, SampleMeta};
use crate::sheet::{read_workbook, Cell, Sheet};
use crate::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Which frames to index: the databases' cropped faces (as the reference) or the raw frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FrameSource {
    /// `Cropped/` (CASME, CASME II), `cropped/` (CAS(ME)^2), `*_cropped/` (combined layout).
    #[default]
    Cropped,
    /// `CASME2_RAW_selected/` (CASME II), `rawpic/` (CAS(ME)^2), and for CASME a folder named
    /// like the annotation file or `CASME_raw_selected/` (unconfirmed layout); the combined
    /// layout has no raw frames.
    Raw,
}

/// Options of [`index_root`].
#[derive(Clone, Debug, Default)]
pub struct IndexOptions {
    /// Cropped (default) or raw frames.
    pub source: FrameSource,
    /// The sample list of a combined layout; by default `combined_3class.csv` beside the
    /// `*_cropped` folders or in `../reference/`, else the first CSV there with a list header.
    pub combined_list: Option<PathBuf>,
}

/// How a database was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// The authors' release: an annotation workbook and frame folders beside it.
    Native,
    /// The reference's combined layout: `<dataset>_cropped/` folders and a list CSV.
    Combined,
}

/// A database found under the root.
#[derive(Clone, Debug)]
pub struct Source {
    /// The database.
    pub dataset: Dataset,
    /// Native or combined.
    pub layout: Layout,
    /// The annotation workbook or list CSV.
    pub annotation: PathBuf,
    /// The folder whose `<subject>/<sample>/` folders hold the frames, if found.
    pub frames: Option<PathBuf>,
}

/// A usable sample: its list row and its onset and apex frame files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexedSample {
    /// The list row.
    pub meta: SampleMeta,
    /// The sample's frame folder.
    pub dir: PathBuf,
    /// The onset frame file.
    pub onset_path: PathBuf,
    /// The apex frame file.
    pub apex_path: PathBuf,
}

/// The result of indexing: usable samples (sorted), dropped samples with reasons, sources.
#[derive(Clone, Debug, Default)]
pub struct Index {
    /// Usable samples, sorted by dataset, subject, sample.
    pub samples: Vec<IndexedSample>,
    /// Unusable samples, in the order met.
    pub dropped: Vec<Dropped>,
    /// The databases found.
    pub sources: Vec<Source>,
}

impl Index {
    /// The sample list (sorted).
    pub fn list(&self) -> Vec<SampleMeta> {
        self.samples.iter().map(|s| s.meta.clone()).collect()
    }
    /// The indexed sample with this key.
    pub fn find(&self, key: &SampleKey) -> Option<&IndexedSample> {
        self.samples.iter().find(|s| &s.meta.key() == key)
    }
    pub(crate) fn merge(&mut self, other: Index) {
        self.samples.extend(other.samples);
        self.dropped.extend(other.dropped);
        self.sources.extend(other.sources);
    }
    /// Sorts the samples and drops duplicates (the same dataset, subject and sample twice).
    pub(crate) fn finish(mut self) -> Self {
        let mut seen: std::collections::HashSet<SampleKey> = std::collections::HashSet::new();
        let mut kept = Vec::with_capacity(self.samples.len());
        for s in self.samples {
            if !seen.insert(s.meta.key()) {
                self.dropped.push(Dropped {
                    dataset: s.meta.dataset,
                    subject: s.meta.subject.clone(),
                    sample: s.meta.sample.clone(),
                    reason: format!(
                        "duplicate: indexed twice, second copy in {}",
                        s.dir.display()
                    ),
                });
            } else {
                kept.push(s);
            }
        }
        kept.sort_by_cached_key(|s| s.meta.key());
        self.samples = kept;
        self
    }
}

// ---------------------------------------------------------------------------------------
// Class rules

/// CASME I (this project's rule, the MEGC convention): happiness -> positive; disgust,
/// repression, sadness, fear, contempt (also spelled `comtempt`) -> negative; surprise ->
/// surprise; tense and anything else dropped. `Err` is the drop reason.
pub fn casme1_class(emotion: &str) -> Result<Class, String> {
    match emotion.trim().to_lowercase().as_str() {
        "happiness" => Ok(Class::Positive),
        "disgust" | "repression" | "sadness" | "fear" | "contempt" | "comtempt" => {
            Ok(Class::Negative)
        }
        "surprise" => Ok(Class::Surprise),
        "tense" => Err("emotion `tense` is outside the 3-class rule".into()),
        e => Err(format!("unknown emotion `{e}`")),
    }
}

/// CASME II (the MEGC 2019 rule): happiness -> positive; disgust, repression -> negative;
/// surprise -> surprise; others, fear, sadness dropped.
pub fn casme2_class(emotion: &str) -> Result<Class, String> {
    match emotion.trim().to_lowercase().as_str() {
        "happiness" => Ok(Class::Positive),
        "disgust" | "repression" => Ok(Class::Negative),
        "surprise" => Ok(Class::Surprise),
        e @ ("others" | "fear" | "sadness") => {
            Err(format!("emotion `{e}` is outside the 3-class rule"))
        }
        e => Err(format!("unknown emotion `{e}`")),
    }
}

/// CAS(ME)^2: the estimated emotion maps directly; `others` dropped.
pub fn casme_sq_class(emotion: &str) -> Result<Class, String> {
    match emotion.trim().to_lowercase().as_str() {
        "negative" => Ok(Class::Negative),
        "positive" => Ok(Class::Positive),
        "surprise" => Ok(Class::Surprise),
        "others" => Err("emotion `others` is outside the 3-class rule".into()),
        e => Err(format!("unknown emotion `{e}`")),
    }
}

// ---------------------------------------------------------------------------------------
// Frames on disk

pub(crate) fn is_image_ext(ext: &str) -> bool {
    matches!(
        ext.to_ascii_lowercase().as_str(),
        "jpg" | "jpeg" | "png" | "bmp"
    )
}

/// The frames of a folder whose files are named `<prefix><N>.<ext>` (N possibly
/// zero-padded); other files (shortcuts, thumbnails) are ignored.
pub fn scan_frames(dir: &Path, prefix: &str) -> Result<BTreeMap<u32, PathBuf>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let Some((num, ext)) = rest.rsplit_once('.') else {
            continue;
        };
        if !is_image_ext(ext) || num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(n) = num.parse::<u32>() {
            out.entry(n).or_insert_with(|| entry.path());
        }
    }
    Ok(out)
}

/// Checks onset < apex and that both frames exist in `dir`; the error is a drop reason.
fn validate(meta: SampleMeta, dir: &Path, prefix: &str) -> Result<IndexedSample, String> {
    if meta.onset == meta.apex {
        return Err(format!("onset equals apex ({})", meta.apex));
    }
    if meta.apex < meta.onset {
        return Err(format!("apex {} is before onset {}", meta.apex, meta.onset));
    }
    if !dir.is_dir() {
        return Err(format!("no frame folder: {}", dir.display()));
    }
    let frames = scan_frames(dir, prefix).map_err(|e| e.to_string())?;
    let get = |n: u32, what: &str| {
        frames.get(&n).cloned().ok_or_else(|| {
            format!(
                "{what} frame {n} missing: no {prefix}{n}.jpg in {} ({} frames there)",
                dir.display(),
                frames.len()
            )
        })
    };
    let onset_path = get(meta.onset, "onset")?;
    let apex_path = get(meta.apex, "apex")?;
    Ok(IndexedSample {
        meta,
        dir: dir.to_path_buf(),
        onset_path,
        apex_path,
    })
}

pub(crate) fn drop_row(
    dataset: Dataset,
    subject: impl Into<String>,
    sample: impl Into<String>,
    reason: impl Into<String>,
) -> Dropped {
    Dropped {
        dataset,
        subject: subject.into(),
        sample: sample.into(),
        reason: reason.into(),
    }
}

/// The first of `names` that is a folder in `dir` or in its parent.
pub(crate) fn find_beside(annotation: &Path, names: &[&str]) -> Option<PathBuf> {
    let dir = annotation.parent()?;
    let mut bases = vec![dir.to_path_buf()];
    if let Some(p) = dir.parent() {
        bases.push(p.to_path_buf());
    }
    bases
        .iter()
        .flat_map(|b| names.iter().map(move |n| b.join(n)))
        .find(|p| p.is_dir())
}

/// `sub01` from a subject cell holding 1, "01", "1" or "sub01".
fn subject_name(cell: &Cell) -> Result<String, String> {
    let t = cell.text();
    let digits = t.strip_prefix("sub").unwrap_or(&t);
    match digits.parse::<u32>() {
        Ok(n) => Ok(format!("sub{n:02}")),
        Err(_) => Err(format!(
            "subject cell {}",
            if t.is_empty() {
                "is empty".into()
            } else {
                format!("is `{t}`")
            }
        )),
    }
}

/// A frame cell as a frame number; the error is a drop reason (text `/`, `\`, empty...).
fn frame_cell(cell: &Cell, what: &str) -> Result<u32, String> {
    match cell.integer() {
        Ok(0) => Err(format!("{what} frame is 0")),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{what} frame cell {e}")),
    }
}

// ---------------------------------------------------------------------------------------
// CASME and CASME II: one header row, one sample per row

struct HeaderSpec {
    dataset: Dataset,
    /// Aliases of: subject, filename, onset, apex, emotion.
    columns: [&'static [&'static str]; 5],
    classify: fn(&str) -> Result<Class, String>,
}

const CASME1_SPEC: HeaderSpec = HeaderSpec {
    dataset: Dataset::Casme1,
    columns: [
        &["Subject"],
        &["Filename", "File name"],
        &["OnsetF", "OnsetFrame"],
        &["ApexF1", "ApexF", "ApexFrame"],
        &["Emotion", "Estimated Emotion"],
    ],
    classify: casme1_class,
};

const CASME2_SPEC: HeaderSpec = HeaderSpec {
    dataset: Dataset::Casme2,
    columns: [
        &["Subject"],
        &["Filename", "File name"],
        &["OnsetFrame", "OnsetF"],
        &["ApexFrame", "ApexF1"],
        &["Estimated Emotion", "Emotion"],
    ],
    classify: casme2_class,
};

/// Frames of a header-sheet database: the root holding `subNN/<Filename>/` and the file
/// name prefix of a sample's frames.
type FramesOf<'a> = &'a dyn Fn(&str) -> String;

fn index_header_sheet(
    sheet: &Sheet,
    spec: &HeaderSpec,
    frames_root: Option<&Path>,
    prefix_of: FramesOf<'_>,
    missing: &str,
) -> Result<Index> {
    let (header, cols) = sheet.header_columns(&spec.columns)?;
    let [c_sub, c_file, c_on, c_apex, c_emo] = [cols[0], cols[1], cols[2], cols[3], cols[4]];
    let mut idx = Index::default();
    for r in header + 1..sheet.rows.len() {
        if sheet.rows[r].iter().all(Cell::is_empty) {
            continue;
        }
        let file = sheet.cell(r, c_file).text();
        let sample = if file.is_empty() {
            format!("(row {})", r + 1)
        } else {
            file.clone()
        };
        let subject = match subject_name(sheet.cell(r, c_sub)) {
            Ok(s) => s,
            Err(e) => {
                idx.dropped.push(drop_row(
                    spec.dataset,
                    sheet.cell(r, c_sub).text(),
                    sample,
                    format!("{e} ({})", sheet.at(r)),
                ));
                continue;
            }
        };
        let d = |reason: String| drop_row(spec.dataset, subject.clone(), sample.clone(), reason);
        if file.is_empty() {
            idx.dropped
                .push(d(format!("empty filename ({})", sheet.at(r))));
            continue;
        }
        let class = match (spec.classify)(&sheet.cell(r, c_emo).text()) {
            Ok(c) => c,
            Err(e) => {
                idx.dropped.push(d(e));
                continue;
            }
        };
        let (onset, apex) = match (
            frame_cell(sheet.cell(r, c_on), "onset"),
            frame_cell(sheet.cell(r, c_apex), "apex"),
        ) {
            (Ok(o), Ok(a)) => (o, a),
            (Err(e), _) | (_, Err(e)) => {
                idx.dropped.push(d(format!("{e} ({})", sheet.at(r))));
                continue;
            }
        };
        let Some(root) = frames_root else {
            idx.dropped.push(d(missing.to_string()));
            continue;
        };
        let meta = SampleMeta {
            dataset: spec.dataset,
            subject: subject.clone(),
            sample: file.clone(),
            onset,
            apex,
            class,
        };
        match validate(meta, &root.join(&subject).join(&file), &prefix_of(&file)) {
            Ok(s) => idx.samples.push(s),
            Err(e) => idx.dropped.push(d(e)),
        }
    }
    Ok(idx)
}

/// Indexes a CASME annotation workbook (`CASME-coded-*.xls` or `Section A.xls`): first
/// sheet, header row `Subject, Filename, , OnsetF, ApexF1, ApexF2, OffsetF, ...Emotion`.
/// Cropped frames: `Cropped/subNN/<Filename>/reg_<Filename>-<N>.jpg`.
pub fn index_casme1(annotation: &Path, source: FrameSource) -> Result<Index> {
    let sheets = read_workbook(annotation)?;
    let (root, reg) = match source {
        FrameSource::Cropped => (find_beside(annotation, &["Cropped", "cropped"]), "reg_"),
        FrameSource::Raw => {
            let stem = annotation
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            (
                find_beside(annotation, &[stem.as_str(), "CASME_raw_selected"]),
                "",
            )
        }
    };
    let prefix_of = |f: &str| format!("{reg}{f}-");
    let missing = format!(
        "no frame folder beside the annotation: {}",
        annotation.display()
    );
    let mut idx = index_header_sheet(
        &sheets[0],
        &CASME1_SPEC,
        root.as_deref(),
        &prefix_of,
        &missing,
    )?;
    idx.sources.push(Source {
        dataset: Dataset::Casme1,
        layout: Layout::Native,
        annotation: annotation.to_path_buf(),
        frames: root,
    });
    Ok(idx)
}

/// Indexes a CASME II annotation workbook (`CASME2-coding-*.xlsx`): first sheet, header row
/// `Subject, Filename, , OnsetFrame, ApexFrame, OffsetFrame, , Action Units, Estimated Emotion`.
/// Cropped frames: `Cropped/subNN/<Filename>/reg_img<N>.jpg`; raw:
/// `CASME2_RAW_selected/subNN/<Filename>/img<N>.jpg`.
pub fn index_casme2(annotation: &Path, source: FrameSource) -> Result<Index> {
    let sheets = read_workbook(annotation)?;
    let (root, prefix) = match source {
        FrameSource::Cropped => (find_beside(annotation, &["Cropped", "cropped"]), "reg_img"),
        FrameSource::Raw => (
            find_beside(annotation, &["CASME2_RAW_selected", "CASME2_RAW"]),
            "img",
        ),
    };
    let missing = format!(
        "no frame folder beside the annotation: {}",
        annotation.display()
    );
    let mut idx = index_header_sheet(
        &sheets[0],
        &CASME2_SPEC,
        root.as_deref(),
        &|_| prefix.to_string(),
        &missing,
    )?;
    idx.sources.push(Source {
        dataset: Dataset::Casme2,
        layout: Layout::Native,
        annotation: annotation.to_path_buf(),
        frames: root,
    });
    Ok(idx)
}

// ---------------------------------------------------------------------------------------
// CAS(ME)^2: three header-less sheets

fn norm_name(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .collect::<String>()
        .to_lowercase()
}

fn pick_sheet<'a>(sheets: &'a [Sheet], name: &str, fallback: usize) -> Option<&'a Sheet> {
    sheets
        .iter()
        .find(|s| norm_name(&s.name) == norm_name(name))
        .or_else(|| sheets.get(fallback))
}

/// Indexes the CAS(ME)^2 workbook (`CAS(ME)^2code_final.xlsx`): sheet 1 the expressions
/// (participant, name, onset, apex, offset, AUs, emotion, type, self-report; no header),
/// sheet `naming rule1` (folder number, folder name, participant), sheet `naming rule2`
/// (stimulus code, name). Micro-expressions only. Cropped frames:
/// `cropped/<folder number>/<name>/img<N>.jpg`; raw: `rawpic/s<folder>/<folder>_<code>*/img<NNN>.jpg`.
pub fn index_casme_sq(annotation: &Path, source: FrameSource) -> Result<Index> {
    const DS: Dataset = Dataset::CasMeSquared;
    let sheets = read_workbook(annotation)?;
    let expr = sheets
        .iter()
        .find(|s| !norm_name(&s.name).starts_with("namingrule"))
        .unwrap_or(&sheets[0]);
    let rule1 = pick_sheet(&sheets, "naming rule1", 1)
        .filter(|s| !std::ptr::eq(*s, expr))
        .ok_or_else(|| Error::Workbook {
            path: annotation.to_path_buf(),
            message: "no sheet `naming rule1` (participant to folder number)".into(),
        })?;
    if rule1.width() < 3 {
        return Err(rule1.missing_column("column 3 (participant)"));
    }
    let mut folder_of = HashMap::new();
    for r in 0..rule1.rows.len() {
        if let (Ok(folder), Ok(participant)) =
            (rule1.cell(r, 0).integer(), rule1.cell(r, 2).integer())
        {
            folder_of.insert(participant, folder);
        }
    }
    let mut code_of = HashMap::new();
    if source == FrameSource::Raw {
        let rule2 = pick_sheet(&sheets, "naming rule2", 2)
            .filter(|s| !std::ptr::eq(*s, expr) && !std::ptr::eq(*s, rule1));
        if let Some(sh) = rule2 {
            for r in 0..sh.rows.len() {
                if let Ok(code) = sh.cell(r, 0).integer() {
                    code_of.insert(sh.cell(r, 1).text(), code);
                }
            }
        }
    }
    if expr.width() < 8 {
        return Err(expr.missing_column(format!(
            "column {} of 8 (expression type)",
            expr.width() + 1
        )));
    }
    let root = match source {
        FrameSource::Cropped => find_beside(annotation, &["cropped"]),
        FrameSource::Raw => find_beside(annotation, &["rawpic"]),
    };
    let mut idx = Index::default();
    for r in 0..expr.rows.len() {
        if expr.rows[r].iter().all(Cell::is_empty) {
            continue;
        }
        let name = expr.cell(r, 1).text();
        let sample = if name.is_empty() {
            format!("(row {})", r + 1)
        } else {
            name.clone()
        };
        let participant = match expr.cell(r, 0).integer() {
            Ok(p) => p,
            Err(_) if r == 0 && expr.cell(r, 2).integer().is_err() => continue, // a header row
            Err(e) => {
                idx.dropped.push(drop_row(
                    DS,
                    expr.cell(r, 0).text(),
                    sample,
                    format!("participant cell {e} ({})", expr.at(r)),
                ));
                continue;
            }
        };
        let Some(&folder) = folder_of.get(&participant) else {
            idx.dropped.push(drop_row(
                DS,
                format!("participant {participant}"),
                sample,
                format!(
                    "participant {participant} is not in sheet `{}` ({})",
                    rule1.name,
                    expr.at(r)
                ),
            ));
            continue;
        };
        let subject = folder.to_string();
        let d = |reason: String| drop_row(DS, subject.clone(), sample.clone(), reason);
        if name.is_empty() {
            idx.dropped
                .push(d(format!("empty expression name ({})", expr.at(r))));
            continue;
        }
        let typ = expr.cell(r, 7).text().to_lowercase();
        if typ.contains("macro") {
            idx.dropped.push(d("macro-expression".into()));
            continue;
        }
        if !typ.contains("micro") {
            idx.dropped.push(d(format!(
                "expression type `{typ}` is neither micro nor macro ({})",
                expr.at(r)
            )));
            continue;
        }
        let class = match casme_sq_class(&expr.cell(r, 6).text()) {
            Ok(c) => c,
            Err(e) => {
                idx.dropped.push(d(e));
                continue;
            }
        };
        let (onset, apex) = match (
            frame_cell(expr.cell(r, 2), "onset"),
            frame_cell(expr.cell(r, 3), "apex"),
        ) {
            (Ok(o), Ok(a)) => (o, a),
            (Err(e), _) | (_, Err(e)) => {
                idx.dropped.push(d(format!("{e} ({})", expr.at(r))));
                continue;
            }
        };
        let Some(root) = root.as_deref() else {
            idx.dropped.push(d(format!(
                "no frame folder beside the annotation: {}",
                annotation.display()
            )));
            continue;
        };
        let dir = match source {
            FrameSource::Cropped => root.join(&subject).join(&name),
            FrameSource::Raw => {
                let video = name.rsplit_once('_').map_or(name.as_str(), |(v, _)| v);
                let Some(code) = code_of.get(video) else {
                    idx.dropped
                        .push(d(format!("video `{video}` is not in sheet `naming rule2`")));
                    continue;
                };
                let want = format!("{folder}_{code:04}");
                let sdir = root.join(format!("s{folder}"));
                let found = std::fs::read_dir(&sdir).ok().and_then(|rd| {
                    rd.filter_map(|e| e.ok())
                        .map(|e| e.path())
                        .filter(|p| p.is_dir())
                        .find(|p| {
                            p.file_name()
                                .and_then(|n| n.to_str())
                                .is_some_and(|n| n.starts_with(&want))
                        })
                });
                found.unwrap_or_else(|| sdir.join(want))
            }
        };
        let meta = SampleMeta {
            dataset: DS,
            subject: subject.clone(),
            sample: name.clone(),
            onset,
            apex,
            class,
        };
        match validate(meta, &dir, "img") {
            Ok(s) => idx.samples.push(s),
            Err(e) => idx.dropped.push(d(e)),
        }
    }
    idx.sources.push(Source {
        dataset: DS,
        layout: Layout::Native,
        annotation: annotation.to_path_buf(),
        frames: root,
    });
    Ok(idx)
}

// ---------------------------------------------------------------------------------------
// The reference's combined layout

/// The file name prefix of a frame in the combined layout.
pub fn combined_prefix(dataset: Dataset, sample: &str) -> String {
    match dataset {
        Dataset::Casme1 => format!("reg_{sample}-"),
        Dataset::Casme2 => "reg_img".into(),
        Dataset::CasMeSquared => "img".into(),
        Dataset::Smic => "reg_image".into(),
        Dataset::Samm => format!("{}_", sample.split('_').next().unwrap_or(sample)),
    }
}

fn find_combined_list(dir: &Path) -> Option<PathBuf> {
    let cands = [
        dir.join("combined_3class.csv"),
        dir.join("../reference/combined_3class.csv"),
    ];
    if let Some(p) = cands.into_iter().find(|p| p.is_file()) {
        return Some(p);
    }
    let mut csvs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .collect();
    csvs.sort();
    csvs.into_iter().find(|p| {
        std::fs::read_to_string(p).is_ok_and(|t| {
            t.trim_start_matches('\u{feff}')
                .starts_with(crate::list::LIST_HEADER)
        })
    })
}

/// Indexes the combined layout in `dir` (`casme1_cropped/`, `casme2_cropped/`,
/// `casme^2_cropped/`) with the rows of `list`: every onset and apex frame is checked.
pub fn index_combined(dir: &Path, list: &Path) -> Result<Index> {
    let rows = read_list(list)?;
    let mut idx = Index::default();
    for ds in Dataset::ALL {
        let f = dir.join(ds.combined_folder());
        if f.is_dir() {
            idx.sources.push(Source {
                dataset: ds,
                layout: Layout::Combined,
                annotation: list.to_path_buf(),
                frames: Some(f),
            });
        }
    }
    for meta in rows {
        let folder = dir.join(meta.dataset.combined_folder());
        let sample_dir = folder.join(&meta.subject).join(&meta.sample);
        let prefix = combined_prefix(meta.dataset, &meta.sample);
        let (ds, sub, sam) = (meta.dataset, meta.subject.clone(), meta.sample.clone());
        match validate(meta, &sample_dir, &prefix) {
            Ok(s) => idx.samples.push(s),
            Err(e) => idx.dropped.push(drop_row(ds, sub, sam, e)),
        }
    }
    Ok(idx)
}

// ---------------------------------------------------------------------------------------
// Discovery

/// The annotation files and combined layouts found under a root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// CASME workbooks (a combined `CASME-coded-*.xls` replaces the section files of its folder).
    pub casme1: Vec<PathBuf>,
    /// CASME II workbooks.
    pub casme2: Vec<PathBuf>,
    /// CAS(ME)^2 workbooks.
    pub casme_sq: Vec<PathBuf>,
    /// Folders holding `*_cropped` dataset folders.
    pub combined: Vec<PathBuf>,
}

impl Found {
    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.casme1.is_empty()
            && self.casme2.is_empty()
            && self.casme_sq.is_empty()
            && self.combined.is_empty()
    }
}

const FRAME_FOLDERS: [&str; 6] = [
    "Cropped",
    "cropped",
    "rawpic",
    "selectedpic",
    "CASME2_RAW_selected",
    "CASME2_RAW",
];

/// Finds the databases under `root` (searching 5 levels deep, not inside frame folders).
pub fn discover(root: &Path) -> Result<Found> {
    if !root.is_dir() {
        return Err(Error::io(
            root,
            std::io::Error::new(std::io::ErrorKind::NotFound, "not a folder"),
        ));
    }
    let mut found = Found::default();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        let mut sections = Vec::new();
        let mut coded = Vec::new();
        let mut combined = false;
        for p in entries {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_string();
            if p.is_dir() {
                if Dataset::ALL.iter().any(|d| d.combined_folder() == name) {
                    combined = true;
                } else if depth < 5
                    && !FRAME_FOLDERS.contains(&name.as_str())
                    && !name.starts_with('.')
                {
                    stack.push((p, depth + 1));
                }
                continue;
            }
            if name.starts_with("~$") || name.starts_with('.') {
                continue;
            }
            let lower = name.to_lowercase();
            let is_sheet = lower.ends_with(".xls") || lower.ends_with(".xlsx");
            if !is_sheet {
                continue;
            }
            if lower.starts_with("casme-coded") {
                coded.push(p);
            } else if lower.starts_with("section ") && lower.ends_with(".xls") {
                sections.push(p);
            } else if lower.starts_with("casme2-coding") {
                found.casme2.push(p);
            } else if lower.starts_with("cas(me)^2code_final")
                || lower.starts_with("cas(me)2code_final")
            {
                found.casme_sq.push(p);
            }
        }
        if coded.is_empty() {
            found.casme1.extend(sections);
        } else {
            found.casme1.extend(coded);
        }
        if combined {
            found.combined.push(dir);
        }
    }
    for v in [
        &mut found.casme1,
        &mut found.casme2,
        &mut found.casme_sq,
        &mut found.combined,
    ] {
        v.sort();
    }
    Ok(found)
}

/// Finds and indexes every database under `root`: native releases and combined layouts.
/// Samples found twice are kept once (the second is reported as dropped).
pub fn index_root(root: &Path, opts: &IndexOptions) -> Result<Index> {
    let found = discover(root)?;
    if found.is_empty() {
        return Err(Error::NoDatabase {
            root: root.to_path_buf(),
        });
    }
    let mut idx = Index::default();
    for p in &found.casme1 {
        idx.merge(index_casme1(p, opts.source)?);
    }
    for p in &found.casme_sq {
        idx.merge(index_casme_sq(p, opts.source)?);
    }
    for p in &found.casme2 {
        idx.merge(index_casme2(p, opts.source)?);
    }
    for dir in &found.combined {
        let list = match &opts.combined_list {
            Some(l) => l.clone(),
            None => {
                find_combined_list(dir).ok_or_else(|| Error::NoSampleList { dir: dir.clone() })?
            }
        };
        idx.merge(index_combined(dir, &list)?);
    }
    Ok(idx.finish())
}

#[cfg(test)]
mod tests;
