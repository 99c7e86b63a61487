//! Leave-one-subject-out folds: one fold per (dataset, subject), in order of first appearance
//! in the sample list (the reference's order: 49 folds on its combined list).

use mer_data::{Dataset, SampleMeta};
use serde::{Deserialize, Serialize};

/// One LOSO fold: the samples of one subject of one database are the test set, all the
/// others the training set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fold {
    /// 1-based fold number.
    pub number: usize,
    /// The left-out subject's database (`casme1`, `casme^2`, `casme2`).
    pub dataset: String,
    /// The left-out subject.
    pub subject: String,
    /// Indices (into the sample list) of the training samples, in list order.
    pub train: Vec<usize>,
    /// Indices of the test samples, in list order.
    pub test: Vec<usize>,
}

impl Fold {
    /// `casme1/sub01`.
    pub fn subject_id(&self) -> String {
        format!("{}/{}", self.dataset, self.subject)
    }
    /// `fold-01-casme1-sub01`: a file-name-safe stem (`^` becomes `sq`).
    pub fn stem(&self) -> String {
        let d = self.dataset.replace('^', "sq");
        let s = crate::io::file_safe(&self.subject);
        format!("fold-{:02}-{d}-{s}", self.number)
    }
}

/// The LOSO folds of a sample list. Subjects are told apart by (dataset, subject): CASME's
/// `sub01` and CASME II's `sub01` are different people.
pub fn loso_folds(samples: &[SampleMeta]) -> Vec<Fold> {
    let mut subjects: Vec<(Dataset, &str)> = Vec::new();
    for s in samples {
        if !subjects
            .iter()
            .any(|(d, n)| *d == s.dataset && *n == s.subject)
        {
            subjects.push((s.dataset, &s.subject));
        }
    }
    subjects
        .iter()
        .enumerate()
        .map(|(i, (d, subj))| {
            let (test, train): (Vec<usize>, Vec<usize>) = (0..samples.len())
                .partition(|&j| samples[j].dataset == *d && samples[j].subject == *subj);
            Fold {
                number: i + 1,
                dataset: d.name().to_string(),
                subject: subj.to_string(),
                train,
                test,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mer_data::Class;

    fn meta(d: Dataset, subject: &str, sample: &str, class: Class) -> SampleMeta {
        SampleMeta {
            dataset: d,
            subject: subject.into(),
            sample: sample.into(),
            onset: 1,
            apex: 5,
            class,
        }
    }

    fn list() -> Vec<SampleMeta> {
        use Class::*;
        use Dataset::*;
        vec![
            meta(Casme1, "sub01", "EP01_5", Positive),
            meta(Casme1, "sub01", "EP02", Negative),
            meta(Casme1, "sub02", "EP01", Surprise),
            meta(CasMeSquared, "16", "anger1_1", Negative),
            // The same subject name in another database is another person.
            meta(Casme2, "sub01", "EP02_01f", Positive),
            meta(Casme1, "sub02", "EP07", Negative),
            meta(Casme2, "sub01", "EP03_02", Surprise),
        ]
    }

    /// No subject is ever in both the training and the test set of a fold; every sample is
    /// tested exactly once; folds follow the order of first appearance.
    #[test]
    fn no_subject_in_both_train_and_test() {
        let samples = list();
        let folds = loso_folds(&samples);
        let ids: Vec<String> = folds.iter().map(Fold::subject_id).collect();
        assert_eq!(
            ids,
            ["casme1/sub01", "casme1/sub02", "casme^2/16", "casme2/sub01"]
        );
        let mut tested = vec![0; samples.len()];
        for f in &folds {
            assert_eq!(f.train.len() + f.test.len(), samples.len());
            assert!(!f.test.is_empty());
            let subj = |i: &usize| (samples[*i].dataset, samples[*i].subject.clone());
            let test: std::collections::HashSet<_> = f.test.iter().map(subj).collect();
            assert_eq!(test.len(), 1, "fold {} tests several subjects", f.number);
            for i in &f.train {
                assert!(
                    !test.contains(&subj(i)),
                    "fold {}: sample {i} of the test subject in training",
                    f.number
                );
            }
            for &i in &f.test {
                tested[i] += 1;
            }
        }
        assert!(tested.iter().all(|&n| n == 1), "{tested:?}");
        assert_eq!(folds[1].test, vec![2, 5]);
        assert_eq!(folds[2].stem(), "fold-03-casmesq2-16");
    }
}
