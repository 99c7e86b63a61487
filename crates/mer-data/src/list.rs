//! Sample lists: the reference's `Dataset,Subject,Sample,Onset,Apex,Class` CSV,
//! dropped-sample reports, counts and list comparison.

use crate::{Error, Result};
use mer_common::fs::write_atomic;
use mer_common::names::natural_cmp;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// The header of a sample list, as in the reference's `combined_3class.csv`.
pub const LIST_HEADER: &str = "Dataset,Subject,Sample,Onset,Apex,Class";
/// The header of a dropped-sample report.
pub const DROPPED_HEADER: &str = "Dataset,Subject,Sample,Reason";

/// A database. Ordered as in the reference list (casme1, casme^2, casme2), then the two of
/// the MEGC 2019 composite that the Off-TANet benchmark does not use (smic, samm).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dataset {
    /// CASME (CASME I), 60 fps: `casme1`.
    Casme1,
    /// CAS(ME)^2, 30 fps: `casme^2`.
    CasMeSquared,
    /// CASME II, 200 fps: `casme2`.
    Casme2,
    /// SMIC, its high-speed camera (HS, 100 fps): `smic`.
    Smic,
    /// SAMM, 200 fps: `samm`.
    Samm,
}

impl Dataset {
    /// The Off-TANet benchmark's three, in list order.
    pub const ALL: [Dataset; 3] = [Dataset::Casme1, Dataset::CasMeSquared, Dataset::Casme2];
    /// Every database this crate reads, in list order.
    pub const EVERY: [Dataset; 5] = [
        Dataset::Casme1,
        Dataset::CasMeSquared,
        Dataset::Casme2,
        Dataset::Smic,
        Dataset::Samm,
    ];

    /// The name used in lists: `casme1`, `casme^2`, `casme2`.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Casme1 => "casme1",
            Dataset::CasMeSquared => "casme^2",
            Dataset::Casme2 => "casme2",
            Dataset::Smic => "smic",
            Dataset::Samm => "samm",
        }
    }
    /// Parses a list name.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::EVERY.into_iter().find(|d| d.name() == s.trim())
    }
    /// The folder of the reference's combined layout (`casme1_cropped`, ...).
    pub fn combined_folder(self) -> String {
        format!("{}_cropped", self.name())
    }
    fn rank(self) -> u8 {
        match self {
            Dataset::Casme1 => 0,
            Dataset::CasMeSquared => 1,
            Dataset::Casme2 => 2,
            Dataset::Smic => 3,
            Dataset::Samm => 4,
        }
    }
}

impl Ord for Dataset {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank().cmp(&other.rank())
    }
}
impl PartialOrd for Dataset {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The three classes, with the reference's indices: negative 0, positive 1, surprise 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// Index 0.
    Negative,
    /// Index 1.
    Positive,
    /// Index 2.
    Surprise,
}

impl Class {
    /// All three, in index order.
    pub const ALL: [Class; 3] = [Class::Negative, Class::Positive, Class::Surprise];
    /// The class index used as a training label.
    pub fn index(self) -> usize {
        self as usize
    }
    /// The list name: `negative`, `positive`, `surprise`.
    pub fn name(self) -> &'static str {
        match self {
            Class::Negative => "negative",
            Class::Positive => "positive",
            Class::Surprise => "surprise",
        }
    }
    /// Parses a list name (case-insensitive).
    pub fn from_name(s: &str) -> Option<Self> {
        let s = s.trim().to_ascii_lowercase();
        Self::ALL.into_iter().find(|c| c.name() == s)
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One row of a sample list.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SampleMeta {
    /// The database.
    pub dataset: Dataset,
    /// `sub01` (CASME, CASME II) or the bare folder number `16` (CAS(ME)^2).
    pub subject: String,
    /// The sample's folder name (`EP02_01f`, `anger1_1`).
    pub sample: String,
    /// Onset frame number.
    pub onset: u32,
    /// Apex frame number.
    pub apex: u32,
    /// The 3-class label.
    pub class: Class,
}

impl SampleMeta {
    /// `dataset/subject/sample`, as used in messages and cache paths.
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.dataset, self.subject, self.sample)
    }
    /// The key that identifies a sample across lists.
    pub fn key(&self) -> SampleKey {
        SampleKey {
            dataset: self.dataset,
            subject: self.subject.clone(),
            sample: self.sample.clone(),
        }
    }
}

/// Identifies a sample: dataset, subject, sample. Ordered as lists are sorted.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SampleKey {
    /// The database.
    pub dataset: Dataset,
    /// The subject.
    pub subject: String,
    /// The sample.
    pub sample: String,
}

impl Ord for SampleKey {
    fn cmp(&self, o: &Self) -> Ordering {
        self.dataset
            .cmp(&o.dataset)
            .then_with(|| natural_cmp(&self.subject, &o.subject))
            .then_with(|| natural_cmp(&self.sample, &o.sample))
            .then_with(|| self.subject.cmp(&o.subject))
            .then_with(|| self.sample.cmp(&o.sample))
    }
}
impl PartialOrd for SampleKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl fmt::Display for SampleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.dataset, self.subject, self.sample)
    }
}

/// Sorts a list by dataset (casme1, casme^2, casme2), subject and sample, numbers
/// inside names compared as numbers.
pub fn sort_samples(samples: &mut [SampleMeta]) {
    samples.sort_by_cached_key(|s| s.key());
}

/// A sample the indexer could not use, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// The database.
    pub dataset: Dataset,
    /// The subject as far as it is known (may be the raw cell text).
    pub subject: String,
    /// The sample as far as it is known.
    pub sample: String,
    /// Why it was dropped.
    pub reason: String,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}: {}",
            self.dataset, self.subject, self.sample, self.reason
        )
    }
}

/// The kind of a drop reason, for summaries: the text before any `: ` detail or ` (`
/// location, with numbers replaced by `N` (`apex frame 20 missing: ...` -> `apex frame N missing`).
pub fn reason_kind(reason: &str) -> String {
    let end = [reason.find(": "), reason.find(" (")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(reason.len());
    let mut out = String::new();
    let mut in_num = false;
    for c in reason[..end].chars() {
        if c.is_ascii_digit() {
            if !in_num {
                out.push('N');
            }
            in_num = true;
        } else {
            in_num = false;
            out.push(c);
        }
    }
    out
}

/// Counts of dropped samples per reason kind (see [`reason_kind`]), most frequent first.
pub fn format_drop_summary(dropped: &[Dropped]) -> String {
    let mut m: BTreeMap<String, usize> = BTreeMap::new();
    for d in dropped {
        *m.entry(format!("{}: {}", d.dataset, reason_kind(&d.reason)))
            .or_default() += 1;
    }
    let mut v: Vec<(String, usize)> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.into_iter()
        .map(|(k, n)| format!("{n:>6}  {k}\n"))
        .collect()
}

pub(crate) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Parses a sample list from CSV text; `path` is only used in error messages.
///
/// The header must be `Dataset,Subject,Sample,Onset,Apex,Class` (a UTF-8 BOM and blank
/// lines are tolerated).
pub fn parse_list(text: &str, path: &Path) -> Result<Vec<SampleMeta>> {
    let err = |line: u64, message: String| Error::Csv {
        path: path.to_path_buf(),
        line: line as usize,
        message,
    };
    let header: Vec<&str> = LIST_HEADER.split(',').collect();
    let mut out = Vec::new();
    for row in mer_common::csv::read_table(text, path, &header)? {
        let (n, f) = (row.line, row.fields);
        let dataset = Dataset::from_name(&f[0]).ok_or_else(|| {
            err(
                n,
                format!("unknown dataset `{}` (casme1, casme2 or casme^2)", f[0]),
            )
        })?;
        let frame = |i: usize, what: &str| {
            f[i].parse::<u32>()
                .map_err(|_| err(n, format!("{what} `{}` is not a frame number", f[i])))
        };
        let (onset, apex) = (frame(3, "onset")?, frame(4, "apex")?);
        let class = Class::from_name(&f[5]).ok_or_else(|| {
            err(
                n,
                format!("unknown class `{}` (negative, positive or surprise)", f[5]),
            )
        })?;
        let (subject, sample) = (f[1].clone(), f[2].clone());
        if subject.is_empty() || sample.is_empty() {
            return Err(err(n, "empty subject or sample".into()));
        }
        out.push(SampleMeta {
            dataset,
            subject,
            sample,
            onset,
            apex,
            class,
        });
    }
    Ok(out)
}

/// Reads a sample list CSV.
pub fn read_list(path: &Path) -> Result<Vec<SampleMeta>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_list(&text, path)
}

/// Formats a sample list as CSV text (header included, rows in the given order).
pub fn format_list(samples: &[SampleMeta]) -> String {
    let mut s = format!("{LIST_HEADER}\n");
    for m in samples {
        s.push_str(&format!(
            "{},{},{},{},{},{}\n",
            m.dataset,
            csv_field(&m.subject),
            csv_field(&m.sample),
            m.onset,
            m.apex,
            m.class
        ));
    }
    s
}

/// Writes a sample list CSV atomically.
pub fn write_list(path: &Path, samples: &[SampleMeta]) -> Result<()> {
    Ok(write_atomic(path, format_list(samples).as_bytes())?)
}

/// Writes a dropped-sample report (`Dataset,Subject,Sample,Reason`) atomically.
pub fn write_dropped(path: &Path, dropped: &[Dropped]) -> Result<()> {
    let mut s = format!("{DROPPED_HEADER}\n");
    for d in dropped {
        s.push_str(&format!(
            "{},{},{},{}\n",
            d.dataset,
            csv_field(&d.subject),
            csv_field(&d.sample),
            csv_field(&d.reason)
        ));
    }
    Ok(write_atomic(path, s.as_bytes())?)
}

/// Counts per dataset and class (`[negative, positive, surprise]`).
pub fn class_counts(samples: &[SampleMeta]) -> BTreeMap<Dataset, [usize; 3]> {
    let mut m = BTreeMap::new();
    for s in samples {
        m.entry(s.dataset).or_insert([0; 3])[s.class.index()] += 1;
    }
    m
}

/// A table of counts per dataset and class, with subjects and totals.
pub fn format_counts(samples: &[SampleMeta]) -> String {
    let counts = class_counts(samples);
    let mut s = format!(
        "{:<8} {:>8} {:>8} {:>8} {:>6} {:>8}\n",
        "dataset", "negative", "positive", "surprise", "total", "subjects"
    );
    let mut tot = [0usize; 3];
    for (d, c) in &counts {
        let subjects: std::collections::BTreeSet<&str> = samples
            .iter()
            .filter(|x| x.dataset == *d)
            .map(|x| x.subject.as_str())
            .collect();
        s.push_str(&format!(
            "{:<8} {:>8} {:>8} {:>8} {:>6} {:>8}\n",
            d.name(),
            c[0],
            c[1],
            c[2],
            c.iter().sum::<usize>(),
            subjects.len()
        ));
        for k in 0..3 {
            tot[k] += c[k];
        }
    }
    s.push_str(&format!(
        "{:<8} {:>8} {:>8} {:>8} {:>6}\n",
        "all",
        tot[0],
        tot[1],
        tot[2],
        tot.iter().sum::<usize>()
    ));
    s
}

/// How two sample lists differ, sample by sample.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Samples equal in both lists (same onset, apex and class).
    pub same: usize,
    /// Samples only in the first list.
    pub only_left: Vec<SampleMeta>,
    /// Samples only in the second list.
    pub only_right: Vec<SampleMeta>,
    /// Samples in both lists with a different onset, apex or class: (left, right).
    pub changed: Vec<(SampleMeta, SampleMeta)>,
}

impl Comparison {
    /// True when the lists hold the same samples with the same values (order ignored).
    pub fn is_identical(&self) -> bool {
        self.only_left.is_empty() && self.only_right.is_empty() && self.changed.is_empty()
    }
}

/// Compares two lists by (dataset, subject, sample), ignoring row order.
pub fn compare_lists(left: &[SampleMeta], right: &[SampleMeta]) -> Comparison {
    let l: BTreeMap<SampleKey, &SampleMeta> = left.iter().map(|s| (s.key(), s)).collect();
    let r: BTreeMap<SampleKey, &SampleMeta> = right.iter().map(|s| (s.key(), s)).collect();
    let mut c = Comparison::default();
    for (k, a) in &l {
        match r.get(k) {
            None => c.only_left.push((*a).clone()),
            Some(b) if a.onset == b.onset && a.apex == b.apex && a.class == b.class => c.same += 1,
            Some(b) => c.changed.push(((*a).clone(), (*b).clone())),
        }
    }
    c.only_right = r
        .iter()
        .filter(|(k, _)| !l.contains_key(k))
        .map(|(_, b)| (*b).clone())
        .collect();
    c
}

/// A human-readable report of a comparison; `left` and `right` name the two lists.
pub fn format_comparison(c: &Comparison, left: &str, right: &str) -> String {
    let mut s = format!(
        "{} samples equal; {} only in {left}; {} only in {right}; {} differ\n",
        c.same,
        c.only_left.len(),
        c.only_right.len(),
        c.changed.len()
    );
    for m in &c.only_left {
        s.push_str(&format!(
            "  only in {left}: {} onset {} apex {} {}\n",
            m.id(),
            m.onset,
            m.apex,
            m.class
        ));
    }
    for m in &c.only_right {
        s.push_str(&format!(
            "  only in {right}: {} onset {} apex {} {}\n",
            m.id(),
            m.onset,
            m.apex,
            m.class
        ));
    }
    for (a, b) in &c.changed {
        let mut d = Vec::new();
        if a.onset != b.onset {
            d.push(format!("onset {} vs {}", a.onset, b.onset));
        }
        if a.apex != b.apex {
            d.push(format!("apex {} vs {}", a.apex, b.apex));
        }
        if a.class != b.class {
            d.push(format!("class {} vs {}", a.class, b.class));
        }
        s.push_str(&format!("  differs: {}: {}\n", a.id(), d.join(", ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(
        d: Dataset,
        sub: &str,
        sample: &str,
        onset: u32,
        apex: u32,
        class: Class,
    ) -> SampleMeta {
        SampleMeta {
            dataset: d,
            subject: sub.into(),
            sample: sample.into(),
            onset,
            apex,
            class,
        }
    }

    #[test]
    fn csv_round_trip_and_order() {
        let mut v = vec![
            meta(
                Dataset::Casme2,
                "sub01",
                "EP19_05f",
                396,
                416,
                Class::Negative,
            ),
            meta(
                Dataset::CasMeSquared,
                "24",
                "anger1_12",
                3441,
                3447,
                Class::Negative,
            ),
            meta(
                Dataset::CasMeSquared,
                "24",
                "anger1_4",
                963,
                967,
                Class::Negative,
            ),
            meta(
                Dataset::Casme1,
                "sub01",
                "EP01_5",
                113,
                121,
                Class::Positive,
            ),
            meta(
                Dataset::Casme2,
                "sub01",
                "EP02_01f",
                46,
                59,
                Class::Positive,
            ),
        ];
        sort_samples(&mut v);
        let order: Vec<String> = v.iter().map(|m| m.id()).collect();
        assert_eq!(
            order,
            [
                "casme1/sub01/EP01_5",
                "casme^2/24/anger1_4",
                "casme^2/24/anger1_12",
                "casme2/sub01/EP02_01f",
                "casme2/sub01/EP19_05f"
            ]
        );
        let text = format_list(&v);
        assert!(text.starts_with(
            "Dataset,Subject,Sample,Onset,Apex,Class\ncasme1,sub01,EP01_5,113,121,positive\n"
        ));
        assert_eq!(parse_list(&text, Path::new("x.csv")).unwrap(), v);
    }

    fn check_err(text: &str, expected: &str) {
        let e = parse_list(text, Path::new("l.csv"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, expected);
    }

    #[test]
    fn csv_errors_name_the_line() {
        check_err("", "l.csv, line 1: empty file: no header");
        check_err(
            "a,b\n",
            "l.csv, line 1: header `a,b` is not `Dataset,Subject,Sample,Onset,Apex,Class`",
        );
        check_err(
            "Dataset,Subject,Sample,Onset,Apex,Class\ncasme3,sub01,EP,1,2,negative\n",
            "l.csv, line 2: unknown dataset `casme3` (casme1, casme2 or casme^2)",
        );
        check_err(
            "Dataset,Subject,Sample,Onset,Apex,Class\n\ncasme2,sub01,EP,1,/,negative\n",
            "l.csv, line 3: apex `/` is not a frame number",
        );
        check_err(
            "Dataset,Subject,Sample,Onset,Apex,Class\ncasme2,sub01,EP,1\n",
            "l.csv, line 2: 4 fields, expected 6 (Dataset,Subject,Sample,Onset,Apex,Class)",
        );
        check_err(
            "Dataset,Subject,Sample,Onset,Apex,Class\ncasme2,sub01,EP,1,2,others\n",
            "l.csv, line 2: unknown class `others` (negative, positive or surprise)",
        );
    }

    #[test]
    fn comparison() {
        let a = vec![
            meta(Dataset::Casme2, "sub01", "A", 1, 2, Class::Negative),
            meta(Dataset::Casme2, "sub01", "B", 1, 2, Class::Negative),
            meta(Dataset::Casme2, "sub01", "C", 1, 2, Class::Negative),
        ];
        let b = vec![
            meta(Dataset::Casme2, "sub01", "C", 1, 2, Class::Negative),
            meta(Dataset::Casme2, "sub01", "B", 1, 3, Class::Positive),
            meta(Dataset::Casme2, "sub02", "D", 1, 2, Class::Surprise),
        ];
        let c = compare_lists(&a, &b);
        assert_eq!(c.same, 1);
        assert_eq!(c.only_left.len(), 1);
        assert_eq!(c.only_right[0].sample, "D");
        let report = format_comparison(&c, "derived", "reference");
        assert!(
            report.contains("differs: casme2/sub01/B: apex 2 vs 3, class negative vs positive"),
            "{report}"
        );
        assert!(compare_lists(&a, &a).is_identical());
    }

    #[test]
    fn reason_kinds() {
        assert_eq!(
            reason_kind("apex frame 20 missing: no reg_img20.jpg in x (3 frames there)"),
            "apex frame N missing"
        );
        assert_eq!(
            reason_kind("apex frame cell is text `/` (a.xlsx, sheet `Sheet1`, row 3)"),
            "apex frame cell is text `/`"
        );
        assert_eq!(reason_kind("onset equals apex (20)"), "onset equals apex");
        assert_eq!(reason_kind("macro-expression"), "macro-expression");
        let d = |r: &str| Dropped {
            dataset: Dataset::Casme2,
            subject: "sub01".into(),
            sample: "x".into(),
            reason: r.into(),
        };
        let s = format_drop_summary(&[
            d("no frame folder: /a"),
            d("no frame folder: /b"),
            d("macro-expression"),
        ]);
        assert_eq!(
            s,
            "     2  casme2: no frame folder\n     1  casme2: macro-expression\n"
        );
    }

    #[test]
    fn quoted_fields_and_a_byte_order_mark() {
        let text = "\u{feff}Dataset,Subject,Sample,Onset,Apex,Class\r\ncasme2,\"sub,01\",\"E\"\"P\",1,2,negative\r\n";
        let v = parse_list(text, Path::new("q.csv")).unwrap();
        assert_eq!(
            (v[0].subject.as_str(), v[0].sample.as_str()),
            ("sub,01", "E\"P")
        );
        assert_eq!(parse_list(&format_list(&v), Path::new("q.csv")).unwrap(), v);
        let e = parse_list(
            "Dataset,Subject,Sample,Onset,Apex,Class\ncasme2,\"a",
            Path::new("q.csv"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("q.csv, line 2"), "{e}");
    }
}
