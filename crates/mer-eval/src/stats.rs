//! Uncertainty of pooled UAR/UF1: the spread over seeds and bootstrap intervals over
//! subjects.
//!
//! The data are, per seed, one confusion matrix per LOSO fold (the fold's test predictions
//! at the honest epoch). The statistic of an experiment is the mean over its seeds of the
//! UAR (UF1) of the pooled confusion matrix. A bootstrap replicate draws as many folds as
//! there are, with replacement (a fold is a subject: the unit the protocol generalises
//! over), pools each seed's matrices of the drawn folds, and recomputes the statistic. The
//! 95% interval is the 2.5% and 97.5% percentiles of the replicates. The replicates' fold
//! draws are the same for every experiment (a fixed seed), so a paired difference
//! (experiment minus reference, same seeds, same folds) is computed replicate by replicate.

use serde::{Deserialize, Serialize};

use crate::metrics::Confusion;
use mer_common::rng::{Seeding, SplitMix64};

/// Bootstrap replicates of every interval.
pub const REPLICATES: usize = 2000;

/// A two-sided 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// 2.5% percentile.
    pub low: f64,
    /// 97.5% percentile.
    pub high: f64,
}

impl Interval {
    /// Whether the interval excludes zero.
    pub fn excludes_zero(&self) -> bool {
        self.low > 0.0 || self.high < 0.0
    }
}

/// A statistic with its 95% bootstrap interval, for UAR and UF1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// UAR (point estimate on all folds).
    pub uar: f64,
    /// Its interval.
    pub uar_ci: Interval,
    /// UF1.
    pub uf1: f64,
    /// Its interval.
    pub uf1_ci: Interval,
}

/// Mean and sample standard deviation (0 for fewer than two values).
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (m, 0.0);
    }
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, var.sqrt())
}

/// The `q` quantile of sorted values (linear interpolation between order statistics, as
/// NumPy's default).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let (i, f) = (h.floor() as usize, h - h.floor());
    if i + 1 < sorted.len() {
        sorted[i] + f * (sorted[i + 1] - sorted[i])
    } else {
        sorted[i]
    }
}

fn interval(mut v: Vec<f64>) -> Interval {
    v.sort_by(f64::total_cmp);
    Interval {
        low: quantile(&v, 0.025),
        high: quantile(&v, 0.975),
    }
}

/// Mean over seeds of the pooled UAR and UF1 of the folds `draw` (indices, repeats allowed).
/// `cells[s][f]`: seed `s`, fold `f`.
fn statistic(cells: &[Vec<Confusion>], draw: &[usize]) -> (f64, f64) {
    let (mut uar, mut uf1) = (0.0, 0.0);
    for folds in cells {
        let mut c = Confusion::new(folds[0].n);
        for &i in draw {
            c.merge(&folds[i]);
        }
        let s = c.scores();
        uar += s.uar;
        uf1 += s.uf1;
    }
    let k = cells.len() as f64;
    (uar / k, uf1 / k)
}

/// The fold draws of the bootstrap for `folds` folds: the same for every experiment.
fn draws(folds: usize) -> impl Iterator<Item = Vec<usize>> {
    let mut rng = SplitMix64::new(Seeding::TRAINING, 0, &[0xB007_5742]);
    (0..REPLICATES).map(move |_| (0..folds).map(|_| rng.below(folds)).collect())
}

/// The statistic on all folds and its bootstrap interval over folds. `cells[s][f]`: the
/// confusion matrix of seed `s`, fold `f` (every seed with the same folds).
pub fn bootstrap(cells: &[Vec<Confusion>]) -> Estimate {
    let folds = cells[0].len();
    let all: Vec<usize> = (0..folds).collect();
    let (uar, uf1) = statistic(cells, &all);
    let (a, b): (Vec<f64>, Vec<f64>) = draws(folds).map(|d| statistic(cells, &d)).unzip();
    Estimate {
        uar,
        uar_ci: interval(a),
        uf1,
        uf1_ci: interval(b),
    }
}

/// The paired difference `a - b` (same seeds in the same order, same folds) and its
/// bootstrap interval: every replicate draws the same folds for both.
pub fn paired_difference(a: &[Vec<Confusion>], b: &[Vec<Confusion>]) -> Estimate {
    let folds = a[0].len();
    let all: Vec<usize> = (0..folds).collect();
    let diff = |d: &[usize]| {
        let (x, y) = (statistic(a, d), statistic(b, d));
        (x.0 - y.0, x.1 - y.1)
    };
    let (uar, uf1) = diff(&all);
    let (da, db): (Vec<f64>, Vec<f64>) = draws(folds).map(|d| diff(&d)).unzip();
    Estimate {
        uar,
        uar_ci: interval(da),
        uf1,
        uf1_ci: interval(db),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(pairs: &[(usize, usize)]) -> Confusion {
        let (t, p): (Vec<usize>, Vec<usize>) = pairs.iter().copied().unzip();
        Confusion::from_pairs(&t, &p, 3)
    }

    /// `n` folds of three samples, fold `i` wrong on one of them when `(i + shift) % 4 == 0`.
    fn folds_of(n: usize, shift: usize) -> Vec<Confusion> {
        (0..n)
            .map(|i| {
                let ok = !(i + shift).is_multiple_of(4);
                conf(&[(0, 0), (1, if ok { 1 } else { 2 }), (2, 2)])
            })
            .collect()
    }

    fn folds(shift: usize) -> Vec<Confusion> {
        folds_of(10, shift)
    }

    #[test]
    fn mean_sd_and_quantiles() {
        let (m, s) = mean_sd(&[0.654, 0.865, 0.759, 0.748, 0.771]);
        assert!((m - 0.7594).abs() < 1e-12);
        assert!((s - 0.075_041_988_246_580_98).abs() < 1e-12, "{s}"); // Python's statistics.stdev
        assert_eq!(mean_sd(&[0.5]), (0.5, 0.0));
        let v: Vec<f64> = (0..=100).map(|i| i as f64).collect();
        assert!((quantile(&v, 0.025) - 2.5).abs() < 1e-12);
        assert!((quantile(&v, 0.975) - 97.5).abs() < 1e-12);
    }

    #[test]
    fn bootstrap_is_deterministic_and_brackets_the_estimate() {
        let cells = vec![folds(0), folds(1)];
        let a = bootstrap(&cells);
        assert_eq!(a, bootstrap(&cells));
        let pooled: Vec<usize> = (0..10).collect();
        assert_eq!((a.uar, a.uf1), statistic(&cells, &pooled));
        assert!(a.uar_ci.low <= a.uar && a.uar <= a.uar_ci.high, "{a:?}");
        assert!(a.uar_ci.low < a.uar_ci.high);
        // One fold repeated ten times pools to the same scores as the fold itself.
        let one = statistic(&cells, &[3; 10]);
        let single = cells.iter().map(|f| f[3].scores().uar).sum::<f64>() / 2.0;
        assert!((one.0 - single).abs() < 1e-12);
    }

    #[test]
    fn paired_difference_of_an_experiment_with_itself_is_zero() {
        let cells = vec![folds(0)];
        let d = paired_difference(&cells, &cells);
        assert_eq!((d.uar, d.uar_ci.low, d.uar_ci.high), (0.0, 0.0, 0.0));
        assert!(!d.uar_ci.excludes_zero());
        // A model that is always right against one that misses in a quarter of 40 folds:
        // the whole interval is above zero.
        let perfect = vec![(0..40).map(|_| conf(&[(0, 0), (1, 1), (2, 2)])).collect()];
        let d = paired_difference(&perfect, &[folds_of(40, 0)]);
        assert!(
            d.uar > 0.0 && d.uar_ci.excludes_zero() && d.uar_ci.low > 0.0,
            "{d:?}"
        );
    }
}
