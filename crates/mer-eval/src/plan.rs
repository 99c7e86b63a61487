//! Planning a run's cells: the grid (experiment x seed x fold) in a fixed order, a static
//! cost per cell, and the assignment of cells to shards (`--shard I/N`, or a Slurm array
//! task, or a Kubernetes indexed job's completion index).
//!
//! The assignment is a function of the grid alone (never of what is already done, the
//! machine or the time), so every shard of a run computes the same partition: the longest
//! cells first, each to the shard with the least assigned cost (ties to the lowest shard),
//! the classic LPT rule, within 4/3 of the best possible balance.

use std::fmt;
use std::str::FromStr;

use crate::run_dir::CellKey;
use crate::{Error, Result};

/// Shard `index` (1-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1-based index.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Shard `index` (1-based) of `count`, checked.
    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 || index == 0 || index > count {
            return Err(Error::Invalid(format!(
                "shard {index}/{count}: expected I/N with 1 <= I <= N"
            )));
        }
        Ok(Shard { index, count })
    }

    /// The shard of this process from the environment of a cluster scheduler, if any:
    /// Slurm job arrays (`SLURM_ARRAY_TASK_ID` - `SLURM_ARRAY_TASK_MIN` among
    /// `SLURM_ARRAY_TASK_COUNT` tasks; the array must be dense, `0-K` or `1-K`, with any
    /// `%` limit) or Kubernetes indexed jobs (`JOB_COMPLETION_INDEX`, 0-based, with the
    /// number of completions in `JOB_COMPLETIONS`, which the job's pod template must set).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<Shard>> {
        let num = |name: &str| -> Result<Option<usize>> {
            match var(name) {
                None => Ok(None),
                Some(v) => v.trim().parse::<usize>().map(Some).map_err(|_| {
                    Error::Invalid(format!("environment variable {name}=`{v}`: not a number"))
                }),
            }
        };
        if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
            let count = num("SLURM_ARRAY_TASK_COUNT")?.ok_or_else(|| {
                Error::Invalid(
                    "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not".into(),
                )
            })?;
            let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let dense = num("SLURM_ARRAY_TASK_MAX")?
                .is_none_or(|max| max >= min && max - min + 1 == count)
                && num("SLURM_ARRAY_TASK_STEP")?.is_none_or(|s| s == 1);
            let index = id.checked_sub(min).map(|i| i + 1).unwrap_or(0);
            if !dense {
                return Err(Error::Invalid(format!(
                    "Slurm array task {id}: the array (min {min}, {count} tasks) is not dense; use --array=0-{}",
                    count.saturating_sub(1)
                )));
            }
            return Shard::new(index, count)
                .map(Some)
                .map_err(|_| {
                    Error::Invalid(format!(
                        "Slurm array task {id} (min {min}) of {count}: the array must be dense (e.g. --array=0-{})",
                        count.saturating_sub(1)
                    ))
                });
        }
        if let Some(i) = num("JOB_COMPLETION_INDEX")? {
            let count = num("JOB_COMPLETIONS")?.ok_or_else(|| {
                Error::Invalid(
                    "JOB_COMPLETION_INDEX is set but JOB_COMPLETIONS is not: set it in the job's pod template to the job's completions"
                        .into(),
                )
            })?;
            return Shard::new(i + 1, count).map(Some);
        }
        Ok(None)
    }
}

impl FromStr for Shard {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Invalid(format!("shard `{s}`: expected I/N, e.g. 2/3"));
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let i = i.trim().parse().map_err(|_| bad())?;
        let n = n.trim().parse().map_err(|_| bad())?;
        Shard::new(i, n)
    }
}

/// One cell of a planned grid.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedCell {
    /// The cell.
    pub key: CellKey,
    /// Index of its experiment in the grid.
    pub experiment: usize,
    /// Index of its fold in the fold list.
    pub fold: usize,
    /// Static cost (multiply-accumulates per sample x samples seen; only ratios matter).
    pub cost: f64,
}

/// What one experiment's cells cost: its network's operations per sample and its schedule's
/// epochs and observations.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentCost {
    /// The experiment's name.
    pub name: String,
    /// Multiply-accumulates (or flops) per sample of its network.
    pub macs: f64,
    /// Its training epochs.
    pub epochs: usize,
    /// Its observation epochs.
    pub observations: usize,
}

/// The cells of a grid in order (experiment, seed, fold), with their static costs:
/// `experiments[e]` the network's cost per sample and the schedule's epochs, `folds[f] =
/// (number, train, test)`: the 1-based number and the samples of fold `f`. A test-fold
/// evaluation counts a third of a training step per sample (forward only), once per
/// observation.
pub fn plan_cells(
    experiments: &[ExperimentCost],
    seeds: &[u64],
    folds: &[(usize, usize, usize)],
) -> Vec<PlannedCell> {
    let mut out = Vec::new();
    for (ei, e) in experiments.iter().enumerate() {
        let (name, macs) = (&e.name, &e.macs);
        for &seed in seeds {
            for (fi, &(number, train, test)) in folds.iter().enumerate() {
                let samples = (e.epochs * train) as f64 + (e.observations * test) as f64 / 3.0;
                out.push(PlannedCell {
                    key: CellKey {
                        experiment: name.clone(),
                        seed,
                        fold: number,
                    },
                    experiment: ei,
                    fold: fi,
                    cost: macs * samples,
                });
            }
        }
    }
    out
}

/// The shard (0-based) of every cell: longest first (ties in grid order), each to the
/// least loaded shard (ties to the lowest).
pub fn assign_shards(costs: &[f64], count: usize) -> Vec<usize> {
    let count = count.max(1);
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by(|&a, &b| costs[b].total_cmp(&costs[a]).then(a.cmp(&b)));
    let mut load = vec![0.0f64; count];
    let mut out = vec![0; costs.len()];
    for i in order {
        let s = (0..count)
            .min_by(|&a, &b| load[a].total_cmp(&load[b]).then(a.cmp(&b)))
            .expect("at least one shard");
        load[s] += costs[i];
        out[i] = s;
    }
    out
}

/// The cells of `shard` (all cells without one), in grid order. The assignment sees the
/// cells in the order of their keys, so it does not depend on the order of the
/// experiments in the file or of the seeds on the command line.
pub fn shard_cells(cells: Vec<PlannedCell>, shard: Option<Shard>) -> Vec<PlannedCell> {
    let Some(sh) = shard else {
        return cells;
    };
    let mut by_key: Vec<usize> = (0..cells.len()).collect();
    by_key.sort_by(|&a, &b| cells[a].key.cmp(&cells[b].key));
    let costs: Vec<f64> = by_key.iter().map(|&i| cells[i].cost).collect();
    let mut owner = vec![0; cells.len()];
    for (k, o) in by_key.iter().zip(assign_shards(&costs, sh.count)) {
        owner[*k] = o;
    }
    cells
        .into_iter()
        .zip(owner)
        .filter(|(_, o)| *o == sh.index - 1)
        .map(|(c, _)| c)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn shards_parse_and_come_from_the_schedulers_environment() {
        assert_eq!(
            "2/3".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 3 }
        );
        for bad in ["0/3", "4/3", "1/0", "2", "a/b", "1/2/3"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert_eq!(Shard::from_env(env(&[])).unwrap(), None);
        let slurm = [
            ("SLURM_ARRAY_TASK_ID", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert_eq!(
            Shard::from_env(env(&slurm)).unwrap(),
            Some(Shard { index: 1, count: 4 })
        );
        let one_based = [
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
        ];
        assert_eq!(
            Shard::from_env(env(&one_based)).unwrap(),
            Some(Shard { index: 4, count: 4 })
        );
        let sparse = [
            ("SLURM_ARRAY_TASK_ID", "6"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        let e = Shard::from_env(env(&sparse)).unwrap_err();
        assert!(e.to_string().contains("must be dense"), "{e}");
        // --array=0-6:2: four tasks, ids 0, 2, 4, 6; id 2 would pass the range check.
        let stepped = [
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "6"),
        ];
        let e = Shard::from_env(env(&stepped)).unwrap_err();
        assert!(e.to_string().contains("not dense"), "{e}");
        let k8s = [("JOB_COMPLETION_INDEX", "2"), ("JOB_COMPLETIONS", "3")];
        assert_eq!(
            Shard::from_env(env(&k8s)).unwrap(),
            Some(Shard { index: 3, count: 3 })
        );
        let e = Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "2")])).unwrap_err();
        assert!(e.to_string().contains("JOB_COMPLETIONS"), "{e}");
    }

    #[test]
    fn every_cell_is_in_exactly_one_shard_and_the_shards_balance() {
        let cost = |name: &str, macs: f64| ExperimentCost {
            name: name.into(),
            macs,
            epochs: 8,
            observations: 2,
        };
        let exps = vec![cost("ta", 30e6), cost("all-ta", 60e6)];
        let folds: Vec<(usize, usize, usize)> = (1..=7).map(|n| (n, 100 + 7 * n, 10 + n)).collect();
        let cells = plan_cells(&exps, &[0, 1, 2], &folds);
        assert_eq!(cells.len(), 2 * 3 * 7);
        // Grid order: experiment, seed, fold.
        assert_eq!(
            (
                cells[8].key.experiment.as_str(),
                cells[8].key.seed,
                cells[8].key.fold
            ),
            ("ta", 1, 2)
        );
        for n in [1, 2, 3, 5, 42, 50] {
            let parts: Vec<Vec<PlannedCell>> = (1..=n)
                .map(|i| shard_cells(cells.clone(), Some(Shard::new(i, n).unwrap())))
                .collect();
            let mut all: Vec<CellKey> = parts.iter().flatten().map(|c| c.key.clone()).collect();
            all.sort();
            let mut want: Vec<CellKey> = cells.iter().map(|c| c.key.clone()).collect();
            want.sort();
            assert_eq!(all, want, "{n} shards");
            let loads: Vec<f64> = parts
                .iter()
                .map(|p| p.iter().map(|c| c.cost).sum())
                .collect();
            let total: f64 = loads.iter().sum();
            let max_cell = cells.iter().map(|c| c.cost).fold(0.0, f64::max);
            let worst = loads.iter().cloned().fold(0.0, f64::max);
            // LPT: the busiest shard holds at most the mean plus one cell.
            assert!(
                worst <= total / n as f64 + max_cell + 1e-6,
                "{n}: {loads:?}"
            );
            // Deterministic: the same partition twice.
            let again = shard_cells(cells.clone(), Some(Shard::new(1, n).unwrap()));
            assert_eq!(again, parts[0]);
        }
        assert_eq!(shard_cells(cells.clone(), None), cells);
        // The experiments' order in the file does not move a cell to another shard.
        let swapped: Vec<ExperimentCost> = exps.iter().rev().cloned().collect();
        let other = plan_cells(&swapped, &[0, 1, 2], &folds);
        for i in 1..=5 {
            let sh = Some(Shard::new(i, 5).unwrap());
            let keys = |c: &[PlannedCell]| {
                let mut k: Vec<CellKey> = shard_cells(c.to_vec(), sh)
                    .into_iter()
                    .map(|c| c.key)
                    .collect();
                k.sort();
                k
            };
            assert_eq!(keys(&cells), keys(&other));
        }
    }
}
