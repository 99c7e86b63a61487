//! Training one LOSO fold: seeded initialisation, the reference's loop (Adam, step decay,
//! reshuffled mini-batches, cross-entropy) and evaluation of the left-out subject at the
//! observation epochs.

use std::collections::HashMap;
use std::time::Instant;

use mer_model::candle_core::{Device, Tensor};
use mer_model::{ModelSpec, Net, Trainer};
use serde::{Deserialize, Serialize};

use crate::config::Schedule;
use crate::loso::Fold;
use crate::metrics::scores;
use crate::Result;
use mer_common::rng::{Seeding, SplitMix64};

/// A network whose weights are drawn from `SplitMix64(seed, stream)` with PyTorch's default
/// initialisation (conv and linear weights and biases `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`,
/// BatchNorm weight 1 and bias 0, running statistics 0 and 1), so that the initial weights
/// are a function of the seed (candle's CPU generator cannot be seeded). The same rule for
/// Off-TANet and the baselines (all five use PyTorch's default initialisation).
pub fn seeded_model(spec: &ModelSpec, seed: u64, stream: &[u64]) -> Result<Net> {
    let dev = Device::Cpu;
    let net = spec.random(&dev)?;
    let params: HashMap<String, Tensor> = net.named_parameters().into_iter().collect();
    let fan_in = |dims: &[usize]| dims[1..].iter().product::<usize>();
    let mut rng = SplitMix64::new(Seeding::TRAINING, seed, stream);
    let mut state = HashMap::new();
    for (name, t) in net.state_dict()? {
        let bound = params.get(&name).and_then(|p| {
            if p.dims().len() >= 2 {
                Some(fan_in(p.dims()))
            } else {
                // A bias takes its weight's fan-in; BatchNorm's 1-D weight and bias keep
                // their constant initial values.
                let w = name.strip_suffix("bias").map(|s| format!("{s}weight"))?;
                params
                    .get(&w)
                    .filter(|w| w.dims().len() >= 2)
                    .map(|w| fan_in(w.dims()))
            }
        });
        let t = match bound {
            Some(f) => {
                let b = 1.0 / (f as f64).sqrt();
                let v: Vec<f32> = (0..t.elem_count())
                    .map(|_| ((rng.f64() * 2.0 - 1.0) * b) as f32)
                    .collect();
                Tensor::from_vec(v, t.dims(), &dev)?
            }
            None => t,
        };
        state.insert(name, t);
    }
    net.load_state_dict(&state, "seeded initialisation")?;
    Ok(net)
}

/// Class predictions (argmax of the evaluation-mode logits) of `x` `[N, C, S, S]`.
pub fn predict(model: &Net, x: &Tensor) -> Result<Vec<usize>> {
    let n = x.dims()[0];
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        let len = (n - start).min(64);
        let logits = model.forward_t(&x.narrow(0, start, len)?, false)?;
        out.extend(
            logits
                .argmax(1)?
                .to_vec1::<u32>()?
                .into_iter()
                .map(|p| p as usize),
        );
        start += len;
    }
    Ok(out)
}

/// The test-fold evaluation after one observation epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// The epoch (0-based) after which the model was evaluated.
    pub epoch: usize,
    /// Predicted classes of the fold's test samples.
    pub pred: Vec<usize>,
    /// The fold's UAR at this epoch.
    pub uar: f64,
    /// The fold's UF1 at this epoch.
    pub uf1: f64,
}

/// Everything a finished fold leaves on disk (as JSON), enough to recompute every metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldRecord {
    /// The experiment's name.
    pub experiment: String,
    /// Hash of everything that determines the result (experiment, schedule, seed, data
    /// list): a resumed run only reuses folds with the same fingerprint.
    pub fingerprint: String,
    /// 1-based fold number.
    pub fold: usize,
    /// The left-out subject's database.
    pub dataset: String,
    /// The left-out subject.
    pub subject: String,
    /// Training samples.
    pub n_train: usize,
    /// Test samples (`dataset/subject/sample`), in list order.
    pub test_samples: Vec<String>,
    /// Their true classes.
    pub truth: Vec<usize>,
    /// The observations, by epoch.
    pub observations: Vec<Observation>,
    /// Mean training loss of every epoch.
    pub train_loss: Vec<f32>,
    /// Wall time of the fold (seconds).
    pub seconds: f64,
    /// Threads the fold's tensor operations used.
    pub threads: usize,
}

impl FoldRecord {
    /// The observation of `epoch`.
    pub fn at(&self, epoch: usize) -> Option<&Observation> {
        self.observations.iter().find(|o| o.epoch == epoch)
    }
}

/// What to train on a fold.
#[derive(Debug, Clone)]
pub struct FoldJob<'a> {
    /// The experiment's name.
    pub experiment: &'a str,
    /// The fingerprint recorded in the fold's file.
    pub fingerprint: &'a str,
    /// The network.
    pub model: ModelSpec,
    /// The experiment's schedule (optimiser included).
    pub schedule: &'a Schedule,
    /// The seed.
    pub seed: u64,
    /// The fold.
    pub fold: &'a Fold,
    /// All samples' inputs `[N, C, S, S]` of the model's shape.
    pub x: &'a Tensor,
    /// All samples' classes.
    pub labels: &'a [usize],
    /// All samples' ids (`dataset/subject/sample`).
    pub ids: &'a [String],
}

/// Trains a fresh seeded network on the fold's training samples with the schedule and
/// evaluates it on the test samples after every observation epoch. `on_epoch(e)` is called
/// after each epoch. Returns the record and the final network.
///
/// Initial weights, batch order and dropout masks are functions of `(seed, fold)` (and the
/// epoch, the step), the same for every experiment: a fold trains to the same bits every
/// time on the same machine and thread count.
pub fn train_fold(job: &FoldJob, on_epoch: &(dyn Fn(usize) + Sync)) -> Result<(FoldRecord, Net)> {
    let t0 = Instant::now();
    let s = job.schedule;
    let dev = Device::Cpu;
    let f = job.fold.number as u64;
    let model = seeded_model(&job.model, job.seed, &[f, 0])?;
    model.seed_dropout(SplitMix64::new(Seeding::TRAINING, job.seed, &[f, 2]).next_u64());
    let mut trainer = Trainer::with_config(model, s.optimizer.config(s.lr))?;
    let test_idx: Vec<u32> = job.fold.test.iter().map(|&i| i as u32).collect();
    let x_test = job
        .x
        .index_select(&Tensor::new(test_idx.as_slice(), &dev)?, 0)?;
    let truth: Vec<usize> = job.fold.test.iter().map(|&i| job.labels[i]).collect();
    let observe = s.observation_epochs();
    let mut observations = Vec::with_capacity(observe.len());
    let mut train_loss = Vec::with_capacity(s.epochs);
    for epoch in 0..s.epochs {
        trainer.set_lr(s.lr_at(epoch));
        let mut order = job.fold.train.clone();
        SplitMix64::new(Seeding::TRAINING, job.seed, &[f, 1, epoch as u64]).shuffle(&mut order);
        let (mut sum, mut count) = (0f64, 0usize);
        for batch in order.chunks(s.batch_size) {
            let idx: Vec<u32> = batch.iter().map(|&i| i as u32).collect();
            let y: Vec<u32> = batch.iter().map(|&i| job.labels[i] as u32).collect();
            let xb = job.x.index_select(&Tensor::new(idx.as_slice(), &dev)?, 0)?;
            let loss = trainer.step(&xb, &Tensor::new(y.as_slice(), &dev)?)?;
            sum += loss as f64 * batch.len() as f64;
            count += batch.len();
        }
        train_loss.push((sum / count.max(1) as f64) as f32);
        if observe.contains(&epoch) && !truth.is_empty() {
            let pred = predict(trainer.model(), &x_test)?;
            let sc = scores(&truth, &pred);
            observations.push(Observation {
                epoch,
                pred,
                uar: sc.uar,
                uf1: sc.uf1,
            });
        }
        on_epoch(epoch);
    }
    let record = FoldRecord {
        experiment: job.experiment.to_string(),
        fingerprint: job.fingerprint.to_string(),
        fold: job.fold.number,
        dataset: job.fold.dataset.clone(),
        subject: job.fold.subject.clone(),
        n_train: job.fold.train.len(),
        test_samples: job.fold.test.iter().map(|&i| job.ids[i].clone()).collect(),
        truth,
        observations,
        train_loss,
        seconds: t0.elapsed().as_secs_f64(),
        threads: rayon::current_num_threads(),
    };
    Ok((record, trainer.into_model()))
}

/// Training speed (samples per second) of a fresh network of `cfg` on random inputs: one
/// warm-up step, then `steps` timed steps of `batch` samples, on the current rayon pool.
pub fn measure_speed(spec: &ModelSpec, batch: usize, steps: usize) -> Result<f64> {
    let mut b = crate::bench::StepBench::new(spec, batch)?;
    b.time(true)?;
    let mut seconds = 0.0;
    for _ in 0..steps {
        seconds += b.time(true)?;
    }
    Ok((batch * steps) as f64 / seconds.max(1e-9))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mer_model::{Baseline, ModelConfig, Variant};

    /// `n` random inputs of `[3, 112, 112]` with classes `i % 3` from four subjects
    /// (`i % 4`), and fold `number` leaving out subject `left_out`.
    fn synthetic_fold(
        n: usize,
        number: usize,
        left_out: usize,
    ) -> (Tensor, Vec<usize>, Vec<String>, Fold) {
        synthetic_fold_of(n, number, left_out, (3, 112))
    }

    /// [`synthetic_fold`] with inputs `[C, S, S]`.
    fn synthetic_fold_of(
        n: usize,
        number: usize,
        left_out: usize,
        (c, side): (usize, usize),
    ) -> (Tensor, Vec<usize>, Vec<String>, Fold) {
        let x = Tensor::randn(0f32, 1.0, (n, c, side, side), &Device::Cpu).unwrap();
        let labels = (0..n).map(|i| i % 3).collect();
        let ids = (0..n).map(|i| format!("synth/s{}/e{i}", i % 4)).collect();
        let fold = Fold {
            number,
            dataset: "synth".into(),
            subject: format!("s{left_out}"),
            train: (0..n).filter(|i| i % 4 != left_out).collect(),
            test: (0..n).filter(|i| i % 4 == left_out).collect(),
        };
        (x, labels, ids, fold)
    }

    /// Two epochs with a decay after the first and an observation after each, dropout on.
    fn two_epochs(batch_size: usize) -> Schedule {
        Schedule {
            name: "t".into(),
            epochs: 2,
            batch_size,
            lr: 1e-3,
            lr_decay: 0.3,
            lr_step: 1,
            eval_every: 1,
            dropout: 0.5,
            optimizer: Default::default(),
            epochs_given: false,
        }
    }

    #[test]
    fn a_fold_with_dropout_trains_to_the_same_bits_twice() {
        let (x, labels, ids, fold) = synthetic_fold(12, 1, 0);
        let schedule = two_epochs(4);
        let model = ModelSpec::OffTaNet(ModelConfig::new(mer_model::Variant::Ta).with_dropout(0.5));
        let job = FoldJob {
            experiment: "ta",
            fingerprint: "f",
            model,
            schedule: &schedule,
            seed: 3,
            fold: &fold,
            x: &x,
            labels: &labels,
            ids: &ids,
        };
        let run = || {
            let (r, m) = train_fold(&job, &|_| {}).unwrap();
            let w = m.state_dict().unwrap();
            (
                r.train_loss,
                r.observations,
                w[0].1.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            )
        };
        let (a, b) = (run(), run());
        assert_eq!(a, b);
    }

    /// A cell's bits must not depend on how the machine shares its cores (issue 15): the
    /// same fold trained on one and on two threads, every weight compared bit for bit.
    #[test]
    fn a_fold_trains_to_the_same_bits_on_one_and_two_threads() {
        // 16 training samples, batches of 12 and 4: more samples than reduction chunks,
        // and a short last batch. The 28x28 baselines too (candle's own convolutions and
        // matrix products, dropout, Adam), and Micro-Attention's SGD on STSTNet.
        let mut schedule = two_epochs(12);
        for (k, variant) in [
            ModelSpec::OffTaNet(ModelConfig::new(Variant::Ta).with_dropout(0.5)),
            ModelSpec::OffTaNet(ModelConfig::new(Variant::AllTa).with_dropout(0.5)),
            ModelSpec::Baseline(Baseline::OffApexNet),
            ModelSpec::Baseline(Baseline::Ststnet),
            ModelSpec::Baseline(Baseline::DualInception),
            ModelSpec::Baseline(Baseline::Ststnet),
        ]
        .into_iter()
        .enumerate()
        {
            if k == 5 {
                schedule.optimizer = crate::config::Optimizer::Sgd {
                    momentum: 0.9,
                    weight_decay: 5e-4,
                };
            }
            let (x, labels, ids, fold) = synthetic_fold_of(22, 2, 1, variant.input_shape());
            let job = FoldJob {
                experiment: "t",
                fingerprint: "f",
                model: variant,
                schedule: &schedule,
                seed: 1,
                fold: &fold,
                x: &x,
                labels: &labels,
                ids: &ids,
            };
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let (r, m) = pool.install(|| train_fold(&job, &|_| {})).unwrap();
                // f32 -> f64 is exact (and so is num_batches_tracked's i64).
                let bits: Vec<(String, Vec<u64>)> = m
                    .state_dict()
                    .unwrap()
                    .into_iter()
                    .map(|(k, t)| {
                        let t = t.to_dtype(mer_model::candle_core::DType::F64).unwrap();
                        let v = t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
                        (k, v.into_iter().map(f64::to_bits).collect())
                    })
                    .collect();
                (r.train_loss, r.observations, bits)
            };
            let (one, two) = (run(1), run(2));
            assert_eq!(one.0, two.0, "{variant:?}: training losses");
            assert_eq!(one.1, two.1, "{variant:?}: observations");
            for ((k, a), (_, b)) in one.2.iter().zip(&two.2) {
                assert!(a == b, "{variant:?}: {k} differs between 1 and 2 threads");
            }
        }
    }

    #[test]
    fn seeded_initialisation_is_reproducible_and_torch_like() {
        let cfg = ModelSpec::OffTaNet(ModelConfig::new(Variant::Ta));
        let a = seeded_model(&cfg, 5, &[1]).unwrap().state_dict().unwrap();
        let b = seeded_model(&cfg, 5, &[1]).unwrap().state_dict().unwrap();
        let c = seeded_model(&cfg, 5, &[2]).unwrap().state_dict().unwrap();
        let get = |sd: &Vec<(String, Tensor)>, k: &str| {
            sd.iter()
                .find(|(n, _)| n == k)
                .unwrap()
                .1
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        for k in ["conv1.0.weight", "conv1.0.bias", "dense.6.weight"] {
            assert_eq!(get(&a, k), get(&b, k), "{k}");
            assert_ne!(get(&a, k), get(&c, k), "{k}");
        }
        // Stem conv: fan-in 3*7*7 = 147; bias shares the bound.
        let bound = 1.0 / 147f32.sqrt();
        for k in ["conv1.0.weight", "conv1.0.bias"] {
            let v = get(&a, k);
            assert!(v.iter().all(|x| x.abs() <= bound), "{k}");
            assert!(v.iter().any(|x| x.abs() > 0.5 * bound), "{k}");
        }
        // BatchNorm constants are untouched.
        assert!(get(&a, "conv1.2.weight").iter().all(|&x| x == 1.0));
        assert!(get(&a, "conv1.2.bias").iter().all(|&x| x == 0.0));
    }
}
