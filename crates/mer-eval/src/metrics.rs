//! UAR and UF1 (the paper's eq. 11 and 12), confusion matrices, per-class recall and F1, and
//! the two ways of combining folds: pooled (MEGC) and per-fold mean (the paper's).
//!
//! A set of predictions is scored over the labels present in its truth *or* its predictions,
//! as scikit-learn's `recall_score(average="macro")` and `f1_score(average="macro")` do: a
//! class that is predicted but absent from the truth counts with recall 0 (0/0 counts as 0),
//! a class absent from the predictions counts with its F1 (0 if never hit). The tests hold
//! these functions to scikit-learn's values.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A confusion matrix: `counts[t * n + p]` samples of true class `t` predicted as `p`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    /// Number of classes.
    pub n: usize,
    /// Row-major counts, rows = truth, columns = prediction.
    pub counts: Vec<u64>,
}

impl Confusion {
    /// An empty `n` x `n` matrix.
    pub fn new(n: usize) -> Self {
        Self {
            n,
            counts: vec![0; n * n],
        }
    }

    /// The matrix of paired truth and predictions (class indices below `n`).
    ///
    /// # Panics
    /// If the slices differ in length or an index is `n` or more.
    pub fn from_pairs(truth: &[usize], pred: &[usize], n: usize) -> Self {
        assert_eq!(
            truth.len(),
            pred.len(),
            "truth and predictions differ in length"
        );
        let mut c = Self::new(n);
        for (&t, &p) in truth.iter().zip(pred) {
            c.add(t, p);
        }
        c
    }

    /// Counts one sample.
    ///
    /// # Panics
    /// If `truth` or `pred` is `n` or more.
    pub fn add(&mut self, truth: usize, pred: usize) {
        assert!(truth < self.n && pred < self.n, "class index out of range");
        self.counts[truth * self.n + pred] += 1;
    }

    /// Adds another matrix of the same size.
    pub fn merge(&mut self, other: &Confusion) {
        assert_eq!(self.n, other.n, "confusion matrices of different sizes");
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// Samples of true class `t` predicted as `p`.
    pub fn get(&self, t: usize, p: usize) -> u64 {
        self.counts[t * self.n + p]
    }

    /// Number of samples.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Samples of true class `c` (row sum).
    pub fn support(&self, c: usize) -> u64 {
        (0..self.n).map(|p| self.get(c, p)).sum()
    }

    /// Samples predicted as `c` (column sum).
    pub fn predicted(&self, c: usize) -> u64 {
        (0..self.n).map(|t| self.get(t, c)).sum()
    }

    /// Per-class recall, precision and F1 and their macro averages over the classes present
    /// in the truth or the predictions (scikit-learn's default labels).
    pub fn scores(&self) -> Scores {
        let mut per_class = Vec::new();
        for c in 0..self.n {
            let (tp, support, predicted) = (self.get(c, c), self.support(c), self.predicted(c));
            if support == 0 && predicted == 0 {
                continue;
            }
            let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
            let (fp, fne) = (predicted - tp, support - tp);
            per_class.push(ClassScores {
                class: c,
                support,
                recall: ratio(tp, support),
                precision: ratio(tp, predicted),
                f1: ratio(2 * tp, 2 * tp + fp + fne),
            });
        }
        let k = per_class.len();
        let mean = |f: fn(&ClassScores) -> f64| {
            if k == 0 {
                0.0
            } else {
                per_class.iter().map(f).sum::<f64>() / k as f64
            }
        };
        Scores {
            n: self.total() as usize,
            uar: mean(|c| c.recall),
            uf1: mean(|c| c.f1),
            per_class,
        }
    }
}

/// Scores of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScores {
    /// The class index.
    pub class: usize,
    /// True samples of the class.
    pub support: u64,
    /// TP / (TP + FN), 0 when the class is absent from the truth.
    pub recall: f64,
    /// TP / (TP + FP), 0 when the class is never predicted.
    pub precision: f64,
    /// 2 TP / (2 TP + FP + FN).
    pub f1: f64,
}

/// Macro-averaged scores of a set of predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Number of samples.
    pub n: usize,
    /// Unweighted average recall (eq. 11) over the classes present.
    pub uar: f64,
    /// Unweighted F1 (eq. 12) over the classes present.
    pub uf1: f64,
    /// The classes present in the truth or the predictions, in index order.
    pub per_class: Vec<ClassScores>,
}

/// The scores of `truth` against `pred` (class indices), as scikit-learn's macro averages.
///
/// # Panics
/// If the slices differ in length.
pub fn scores(truth: &[usize], pred: &[usize]) -> Scores {
    let n = truth.iter().chain(pred).copied().max().map_or(0, |m| m + 1);
    Confusion::from_pairs(truth, pred, n).scores()
}

/// UAR and UF1 together.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct UarUf1 {
    /// Unweighted average recall.
    pub uar: f64,
    /// Unweighted F1.
    pub uf1: f64,
}

/// A fold's name in a predictions file: a number when it reads as one, else the text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(untagged)]
pub enum FoldLabel {
    /// A numbered fold (1-based in this project's files).
    Index(u64),
    /// A named fold.
    Name(String),
}

impl FoldLabel {
    /// Parses a CSV field.
    pub fn parse(s: &str) -> Self {
        let s = s.trim();
        s.parse::<u64>()
            .map(FoldLabel::Index)
            .unwrap_or_else(|_| FoldLabel::Name(s.to_string()))
    }
}

impl fmt::Display for FoldLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FoldLabel::Index(i) => write!(f, "{i}"),
            FoldLabel::Name(s) => f.write_str(s),
        }
    }
}

/// The truth and predictions of one fold (class indices).
#[derive(Debug, Clone, PartialEq)]
pub struct FoldPredictions {
    /// The fold.
    pub fold: FoldLabel,
    /// True classes of the fold's test samples.
    pub truth: Vec<usize>,
    /// Predicted classes, paired with `truth`.
    pub pred: Vec<usize>,
}

/// One fold's scores in a [`MetricsReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldScore {
    /// The fold.
    pub fold: FoldLabel,
    /// Its number of test samples.
    pub n: usize,
    /// Its UAR.
    pub uar: f64,
    /// Its UF1.
    pub uf1: f64,
}

/// The scores of a LOSO run: pooled over all folds (MEGC style), the mean of the per-fold
/// scores (the paper's combination) and each fold's. This is the JSON of
/// `cargo xtask metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsReport {
    /// Over the concatenated predictions of all folds.
    pub pooled: UarUf1,
    /// The unweighted mean of the folds' scores.
    pub per_fold_mean: UarUf1,
    /// Per fold, in the order given.
    pub folds: Vec<FoldScore>,
}

/// Scores folds both ways. `n_classes` bounds the class indices.
pub fn evaluate_folds(folds: &[FoldPredictions], n_classes: usize) -> MetricsReport {
    let mut pooled = Confusion::new(n_classes);
    let mut out = Vec::with_capacity(folds.len());
    for f in folds {
        let c = Confusion::from_pairs(&f.truth, &f.pred, n_classes);
        pooled.merge(&c);
        let s = c.scores();
        out.push(FoldScore {
            fold: f.fold.clone(),
            n: s.n,
            uar: s.uar,
            uf1: s.uf1,
        });
    }
    let k = out.len().max(1) as f64;
    let p = pooled.scores();
    MetricsReport {
        pooled: UarUf1 {
            uar: p.uar,
            uf1: p.uf1,
        },
        per_fold_mean: UarUf1 {
            uar: out.iter().map(|f| f.uar).sum::<f64>() / k,
            uf1: out.iter().map(|f| f.uf1).sum::<f64>() / k,
        },
        folds: out,
    }
}

/// The header of a predictions file.
pub const PREDICTIONS_HEADER: &str = "fold,truth,pred";

/// Predictions read from a `fold,truth,pred` CSV (class names), folds in order of first
/// appearance, class names sorted (the indices used in [`FoldPredictions`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionsFile {
    /// The folds.
    pub folds: Vec<FoldPredictions>,
    /// Class names by index.
    pub classes: Vec<String>,
}

/// Parses a `fold,truth,pred` CSV; `path` is only used in error messages.
pub fn parse_predictions(text: &str, path: &Path) -> Result<PredictionsFile> {
    let err = |line: usize, message: String| Error::Csv {
        path: path.to_path_buf(),
        line,
        message,
    };
    let header: Vec<&str> = PREDICTIONS_HEADER.split(',').collect();
    let mut rows = Vec::new();
    for row in mer_common::csv::read_table(text, path, &header)? {
        let f = row.fields;
        if f.iter().any(|s| s.is_empty()) {
            return Err(err(row.line as usize, "empty field".into()));
        }
        rows.push((FoldLabel::parse(&f[0]), f[1].clone(), f[2].clone()));
    }
    if rows.is_empty() {
        return Err(err(1, "no predictions after the header".into()));
    }
    let classes: Vec<String> = rows
        .iter()
        .flat_map(|(_, t, p)| [t.clone(), p.clone()])
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let index: BTreeMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let mut folds: Vec<FoldPredictions> = Vec::new();
    for (fold, t, p) in &rows {
        let pos = match folds.iter().position(|f| &f.fold == fold) {
            Some(i) => i,
            None => {
                folds.push(FoldPredictions {
                    fold: fold.clone(),
                    truth: Vec::new(),
                    pred: Vec::new(),
                });
                folds.len() - 1
            }
        };
        folds[pos].truth.push(index[t.as_str()]);
        folds[pos].pred.push(index[p.as_str()]);
    }
    Ok(PredictionsFile { folds, classes })
}

/// Reads a `fold,truth,pred` CSV.
pub fn read_predictions(path: &Path) -> Result<PredictionsFile> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_predictions(&text, path)
}

/// The `fold,truth,pred` CSV of folds, with class names `classes`.
pub fn format_predictions(folds: &[FoldPredictions], classes: &[&str]) -> String {
    let mut s = format!("{PREDICTIONS_HEADER}\n");
    for f in folds {
        for (&t, &p) in f.truth.iter().zip(&f.pred) {
            s.push_str(&format!("{},{},{}\n", f.fold, classes[t], classes[p]));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values from scikit-learn 1.9.1, made by this script:
    ///
    /// ```python
    /// import warnings
    /// from sklearn.metrics import recall_score, f1_score
    /// warnings.filterwarnings("ignore")
    /// cases = {
    ///     "all_classes":          ([0, 0, 0, 1, 1, 2, 2, 2], [0, 1, 0, 1, 2, 2, 0, 2]),
    ///     "absent_from_truth":    ([0, 0, 1, 1, 1],          [0, 2, 1, 1, 0]),
    ///     "absent_from_pred":     ([0, 0, 1, 2, 2, 2],       [0, 0, 1, 0, 1, 0]),
    ///     "one_class_all_right":  ([1, 1, 1],                [1, 1, 1]),
    ///     "one_class_all_wrong":  ([0, 0],                   [2, 2]),
    ///     "single_sample":        ([2],                      [1]),
    /// }
    /// for name, (t, p) in cases.items():
    ///     print(f'("{name}", &{t}, &{p}, {recall_score(t, p, average="macro")!r}, {f1_score(t, p, average="macro")!r}),')
    /// T = sum((t for t, _ in cases.values()), [])
    /// P = sum((p for _, p in cases.values()), [])
    /// print("pooled", repr(recall_score(T, P, average="macro")), repr(f1_score(T, P, average="macro")))
    /// import numpy as np
    /// print("fold mean", repr(float(np.mean([recall_score(t, p, average="macro") for t, p in cases.values()]))),
    ///       repr(float(np.mean([f1_score(t, p, average="macro") for t, p in cases.values()]))))
    /// ```
    type Case = (&'static str, &'static [usize], &'static [usize], f64, f64);
    const SKLEARN: [Case; 6] = [
        (
            "all_classes",
            &[0, 0, 0, 1, 1, 2, 2, 2],
            &[0, 1, 0, 1, 2, 2, 0, 2],
            0.611111111111111,
            0.611111111111111,
        ),
        (
            "absent_from_truth",
            &[0, 0, 1, 1, 1],
            &[0, 2, 1, 1, 0],
            0.38888888888888884,
            0.43333333333333335,
        ),
        (
            "absent_from_pred",
            &[0, 0, 1, 2, 2, 2],
            &[0, 0, 1, 0, 1, 0],
            0.6666666666666666,
            0.4444444444444444,
        ),
        ("one_class_all_right", &[1, 1, 1], &[1, 1, 1], 1.0, 1.0),
        ("one_class_all_wrong", &[0, 0], &[2, 2], 0.0, 0.0),
        ("single_sample", &[2], &[1], 0.0, 0.0),
    ];
    const SKLEARN_POOLED: (f64, f64) = (0.5396825396825397, 0.533363322837007);
    const SKLEARN_FOLD_MEAN: (f64, f64) = (0.4444444444444444, 0.4148148148148148);

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    fn check(name: &str, truth: &[usize], pred: &[usize], uar: f64, uf1: f64) {
        let s = scores(truth, pred);
        assert!(close(s.uar, uar), "{name}: UAR {} != sklearn {uar}", s.uar);
        assert!(close(s.uf1, uf1), "{name}: UF1 {} != sklearn {uf1}", s.uf1);
        assert_eq!(s.n, truth.len());
    }

    #[test]
    fn per_fold_scores_match_scikit_learn() {
        for (name, t, p, uar, uf1) in SKLEARN {
            check(name, t, p, uar, uf1);
        }
    }

    #[test]
    fn pooled_and_fold_mean_match_scikit_learn() {
        let folds: Vec<FoldPredictions> = SKLEARN
            .iter()
            .enumerate()
            .map(|(i, (_, t, p, _, _))| FoldPredictions {
                fold: FoldLabel::Index(i as u64 + 1),
                truth: t.to_vec(),
                pred: p.to_vec(),
            })
            .collect();
        let r = evaluate_folds(&folds, 3);
        assert!(close(r.pooled.uar, SKLEARN_POOLED.0), "{:?}", r.pooled);
        assert!(close(r.pooled.uf1, SKLEARN_POOLED.1), "{:?}", r.pooled);
        assert!(
            close(r.per_fold_mean.uar, SKLEARN_FOLD_MEAN.0),
            "{:?}",
            r.per_fold_mean
        );
        assert!(
            close(r.per_fold_mean.uf1, SKLEARN_FOLD_MEAN.1),
            "{:?}",
            r.per_fold_mean
        );
        for (f, (name, _, _, uar, uf1)) in r.folds.iter().zip(SKLEARN) {
            assert!(close(f.uar, uar) && close(f.uf1, uf1), "{name}: {f:?}");
        }
    }

    #[test]
    fn per_class_values_and_absent_classes() {
        // absent_from_truth: class 2 predicted once, never true: recall 0, F1 0, support 0.
        let s = scores(&[0, 0, 1, 1, 1], &[0, 2, 1, 1, 0]);
        let c: Vec<usize> = s.per_class.iter().map(|c| c.class).collect();
        assert_eq!(c, vec![0, 1, 2]);
        assert_eq!(s.per_class[2].support, 0);
        assert_eq!((s.per_class[2].recall, s.per_class[2].f1), (0.0, 0.0));
        // Class 1 is absent from both: it does not count.
        let s = scores(&[0, 2], &[0, 2]);
        assert_eq!(s.per_class.len(), 2);
        assert_eq!((s.uar, s.uf1), (1.0, 1.0));
        // No samples at all.
        let s = Confusion::new(3).scores();
        assert_eq!((s.n, s.uar, s.uf1), (0, 0.0, 0.0));
    }

    #[test]
    fn predictions_csv_round_trip_and_errors() {
        let text = "fold,truth,pred\n1,negative,negative\n1,surprise,negative\n2,positive,positive\nx,positive,surprise\n";
        let p = parse_predictions(text, Path::new("p.csv")).unwrap();
        assert_eq!(p.classes, vec!["negative", "positive", "surprise"]);
        assert_eq!(p.folds.len(), 3);
        assert_eq!(p.folds[2].fold, FoldLabel::Name("x".into()));
        let names: Vec<&str> = p.classes.iter().map(String::as_str).collect();
        assert_eq!(format_predictions(&p.folds, &names), text);
        let json = serde_json::to_string(&evaluate_folds(&p.folds, 3).folds[0]).unwrap();
        assert!(json.starts_with("{\"fold\":1,\"n\":2,"), "{json}");
        for (bad, needle) in [
            ("", "line 1: empty file"),
            ("fold,truth\n", "line 1: header"),
            ("fold,truth,pred\n1,a\n", "line 2: 2 fields"),
            ("fold,truth,pred\n", "no predictions"),
        ] {
            let e = parse_predictions(bad, Path::new("p.csv"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}
