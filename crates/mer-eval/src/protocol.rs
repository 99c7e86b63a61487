//! The two evaluation protocols over a run's finished folds.
//!
//! - **Honest** (the headline): the epoch is fixed before looking at any test fold (the last
//!   epoch); UAR and UF1 of all folds' predictions pooled into one confusion matrix (the MEGC
//!   convention), and also the mean of the per-fold scores at that epoch.
//! - **Paper**: the mean of the per-fold scores at the observation epoch whose mean UAR is
//!   the highest (the reference code's protocol). The epoch is chosen on the test folds,
//!   so this is optimistic; UF1 is reported at the epoch chosen by UAR.

use serde::{Deserialize, Serialize};

use crate::metrics::{evaluate_folds, ClassScores, Confusion, FoldLabel, FoldPredictions, UarUf1};
use crate::train::FoldRecord;
use crate::{Error, Result};

/// Scores at one observation epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochScores {
    /// The epoch.
    pub epoch: usize,
    /// Mean of the per-fold scores.
    pub fold_mean: UarUf1,
    /// Over the pooled predictions.
    pub pooled: UarUf1,
}

/// Both protocols' scores of one experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProtocolScores {
    /// Folds scored.
    pub folds: usize,
    /// Test samples over all folds.
    pub samples: usize,
    /// The honest protocol's epoch (fixed in advance: the last).
    pub honest_epoch: usize,
    /// Honest: pooled over all folds' predictions.
    pub honest_pooled: UarUf1,
    /// Honest: mean of the per-fold scores.
    pub honest_fold_mean: UarUf1,
    /// The paper protocol's epoch: the observation with the best mean per-fold UAR.
    pub paper_epoch: usize,
    /// Paper protocol: mean per-fold UAR and UF1 at `paper_epoch`.
    pub paper: UarUf1,
    /// Every observation epoch's scores.
    pub per_epoch: Vec<EpochScores>,
    /// Pooled confusion matrix at the honest epoch.
    pub confusion: Confusion,
    /// Pooled per-class scores at the honest epoch.
    pub per_class: Vec<ClassScores>,
}

/// The predictions of every fold at `epoch`.
pub fn fold_predictions(records: &[FoldRecord], epoch: usize) -> Result<Vec<FoldPredictions>> {
    records
        .iter()
        .map(|r| {
            let o = r.at(epoch).ok_or_else(|| {
                Error::Incomplete(format!(
                    "experiment {} fold {}: no observation at epoch {epoch}",
                    r.experiment, r.fold
                ))
            })?;
            Ok(FoldPredictions {
                fold: FoldLabel::Index(r.fold as u64),
                truth: r.truth.clone(),
                pred: o.pred.clone(),
            })
        })
        .collect()
}

/// Scores the folds of one experiment under both protocols.
pub fn evaluate_protocols(
    records: &[FoldRecord],
    honest_epoch: usize,
    n_classes: usize,
) -> Result<ProtocolScores> {
    let first = records
        .first()
        .ok_or_else(|| Error::Incomplete("no finished folds to score".into()))?;
    let epochs: Vec<usize> = first
        .observations
        .iter()
        .map(|o| o.epoch)
        .filter(|e| records.iter().all(|r| r.at(*e).is_some()))
        .collect();
    let mut per_epoch = Vec::with_capacity(epochs.len());
    for &e in &epochs {
        let m = evaluate_folds(&fold_predictions(records, e)?, n_classes);
        per_epoch.push(EpochScores {
            epoch: e,
            fold_mean: m.per_fold_mean,
            pooled: m.pooled,
        });
    }
    // Best mean UAR; the earliest epoch wins a tie.
    let best = per_epoch
        .iter()
        .fold(None::<&EpochScores>, |b, s| match b {
            Some(b) if b.fold_mean.uar >= s.fold_mean.uar => Some(b),
            _ => Some(s),
        })
        .ok_or_else(|| Error::Incomplete("no observation epoch common to all folds".into()))?;
    let honest_preds = fold_predictions(records, honest_epoch)?;
    let honest = evaluate_folds(&honest_preds, n_classes);
    let mut confusion = Confusion::new(n_classes);
    for f in &honest_preds {
        confusion.merge(&Confusion::from_pairs(&f.truth, &f.pred, n_classes));
    }
    Ok(ProtocolScores {
        folds: records.len(),
        samples: confusion.total() as usize,
        honest_epoch,
        honest_pooled: honest.pooled,
        honest_fold_mean: honest.per_fold_mean,
        paper_epoch: best.epoch,
        paper: best.fold_mean,
        per_class: confusion.scores().per_class,
        per_epoch,
        confusion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Observation;

    fn record(fold: usize, truth: Vec<usize>, obs: Vec<(usize, Vec<usize>)>) -> FoldRecord {
        FoldRecord {
            experiment: "x".into(),
            fingerprint: String::new(),
            fold,
            dataset: "casme1".into(),
            subject: format!("sub{fold:02}"),
            n_train: 10,
            test_samples: vec![],
            truth,
            observations: obs
                .into_iter()
                .map(|(epoch, pred)| Observation {
                    epoch,
                    pred,
                    uar: f64::NAN,
                    uf1: f64::NAN,
                })
                .collect(),
            train_loss: vec![],
            seconds: 0.0,
            threads: 1,
        }
    }

    #[test]
    fn paper_picks_the_best_epoch_honest_takes_the_last() {
        // Epoch 0: both folds perfect. Epoch 1 (the last): fold 1 all wrong.
        let recs = vec![
            record(1, vec![0, 1], vec![(0, vec![0, 1]), (1, vec![1, 0])]),
            record(2, vec![2, 2], vec![(0, vec![2, 2]), (1, vec![2, 2])]),
        ];
        let p = evaluate_protocols(&recs, 1, 3).unwrap();
        assert_eq!((p.paper_epoch, p.paper.uar, p.paper.uf1), (0, 1.0, 1.0));
        assert_eq!(p.honest_epoch, 1);
        // Per-fold at epoch 1: fold 1 UAR 0, fold 2 UAR 1 -> mean 0.5.
        assert_eq!(p.honest_fold_mean.uar, 0.5);
        // Pooled at epoch 1: recall 0 (class 0), 0 (class 1), 1 (class 2) -> 1/3.
        assert!((p.honest_pooled.uar - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(p.confusion.get(0, 1), 1);
        assert_eq!(p.samples, 4);
        assert_eq!(p.per_epoch.len(), 2);
        // A tie keeps the earliest epoch.
        let tie = vec![record(1, vec![0], vec![(0, vec![0]), (5, vec![0])])];
        assert_eq!(evaluate_protocols(&tie, 5, 3).unwrap().paper_epoch, 0);
        assert!(evaluate_protocols(&tie, 7, 3)
            .unwrap_err()
            .to_string()
            .contains("epoch 7"));
    }
}
