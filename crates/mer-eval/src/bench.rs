//! Training-speed benchmarks: our training step (forward, cross-entropy, backward, Adam)
//! and inference on a fixed random batch, and, where `python3 -c "import torch"` works,
//! PyTorch's on the same settings in the same run (the peer script
//! `peers/offtanet_torch.py`, embedded in the binary). Ours and the peer alternate round
//! by round so that both see the same machine load; rates are medians over all timed
//! steps. `cargo xtask bench train` is the command line; the runner's speed measurement
//! ([`crate::train::measure_speed`]) times the same [`StepBench`].

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use mer_model::candle_core::{Device, Tensor};
use mer_model::{Baseline, ModelSpec, SgdConfig, Trainer};

use crate::{Error, Result};

/// Our network, trainer and a fixed random batch `[batch, C, S, S]` of the model's input
/// shape (labels `i % 3`). Micro-Attention trains with its reference optimiser (SGD with
/// momentum and weight decay), every other model with Adam (the peer does the same).
pub struct StepBench {
    trainer: Trainer,
    x: Tensor,
    labels: Tensor,
}

impl StepBench {
    /// A freshly initialised network of `spec` with a random batch.
    pub fn new(spec: &ModelSpec, batch: usize) -> Result<Self> {
        let dev = Device::Cpu;
        let model = spec.random(&dev)?;
        let (c, side) = spec.input_shape();
        let x = Tensor::randn(0f32, 1.0, (batch, c, side, side), &dev)?;
        let labels: Vec<u32> = (0..batch as u32).map(|i| i % 3).collect();
        let labels = Tensor::new(labels.as_slice(), &dev)?;
        let trainer = if *spec == ModelSpec::Baseline(Baseline::MicroAttention) {
            Trainer::with_config(
                model,
                SgdConfig {
                    lr: 1e-3,
                    momentum: 0.9,
                    weight_decay: 5e-4,
                },
            )?
        } else {
            Trainer::new(model)?
        };
        Ok(Self { trainer, x, labels })
    }

    /// Seconds of one training step (`train`) or one evaluation-mode forward.
    pub fn time(&mut self, train: bool) -> Result<f64> {
        let t0 = Instant::now();
        if train {
            let loss = self.trainer.step(&self.x, &self.labels)?;
            if !loss.is_finite() {
                return Err(Error::Invalid(format!("training loss is {loss}")));
            }
        } else {
            let y = self.trainer.model().forward_t(&self.x, false)?;
            let _ = y.sum_all()?.to_scalar::<f32>()?;
        }
        Ok(t0.elapsed().as_secs_f64())
    }
}

/// How the threads are used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchMode {
    /// One trainer whose steps use all threads.
    Step,
    /// One independent trainer per thread (as one fold per core would be); the rate is
    /// their sum.
    Folds,
}

/// What to time.
#[derive(Clone, Debug)]
pub struct TrainBenchOptions {
    /// The model (an Off-TANet variant or a baseline).
    pub model: ModelSpec,
    /// Batch size.
    pub batch: usize,
    /// Threads (the caller sizes the global pool and `RAYON_NUM_THREADS` to it).
    pub threads: usize,
    /// Timed steps per round (after two warm-up steps).
    pub steps: usize,
    /// Rounds; ours and the peer alternate round by round.
    pub rounds: usize,
    /// Parallelism inside a step, or one trainer per thread.
    pub mode: BenchMode,
    /// The Python interpreter of the PyTorch peer; `None`: no peer.
    pub python: Option<String>,
    /// Also time inference (evaluation mode, same batch).
    pub inference: bool,
}

/// Rates in samples per second.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainBenchReport {
    /// Our training rate (median over all timed steps).
    pub ours_train: f64,
    /// Our inference rate, when timed.
    pub ours_infer: Option<f64>,
    /// PyTorch's training rate, when the peer ran.
    pub torch_train: Option<f64>,
    /// PyTorch's inference rate, when the peer ran and inference was timed.
    pub torch_infer: Option<f64>,
    /// The peer's self-description (`torch 2.x, N thread(s), P params`), or why it did
    /// not run.
    pub peer: String,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// Runs the benchmark; `say` receives one line per round and the peer's notes.
pub fn bench_train(o: &TrainBenchOptions, say: &mut dyn FnMut(&str)) -> Result<TrainBenchReport> {
    if o.batch == 0 || o.steps == 0 || o.rounds == 0 || o.threads == 0 {
        return Err(Error::Invalid(
            "batch, steps, rounds and threads must be at least 1".into(),
        ));
    }
    let mut report = TrainBenchReport::default();
    let mut peer = match &o.python {
        None => {
            report.peer = "not asked for".into();
            None
        }
        Some(py) => match Peer::start(py, &o.model, o.batch, o.threads)? {
            Some((p, hello)) => {
                say(&format!("pytorch peer: {hello}"));
                if o.mode == BenchMode::Folds {
                    say(&format!("note: the PyTorch peer runs one process with {} threads (its own intra-op parallelism)", o.threads));
                }
                report.peer = hello;
                Some(p)
            }
            None => {
                report.peer = format!("not installed (`{py} -c \"import torch\"` failed)");
                None
            }
        },
    };
    let workers = if o.mode == BenchMode::Folds {
        o.threads
    } else {
        1
    };
    let mut benches: Vec<StepBench> = (0..workers)
        .map(|_| StepBench::new(&o.model, o.batch))
        .collect::<Result<_>>()?;
    let pools: Vec<rayon::ThreadPool> = if o.mode == BenchMode::Folds {
        (0..workers)
            .map(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build())
            .collect::<std::result::Result<_, _>>()?
    } else {
        Vec::new()
    };
    // Effective seconds per batch of each step: in fold mode all trainers run at once and
    // the time of a batch is the step time divided by the number of trainers.
    let run_ours = |benches: &mut Vec<StepBench>, steps: usize, train: bool| -> Result<Vec<f64>> {
        if pools.is_empty() {
            let b = &mut benches[0];
            return (0..steps).map(|_| b.time(train)).collect();
        }
        let per_worker: Vec<Result<Vec<f64>>> = std::thread::scope(|s| {
            let hs: Vec<_> = benches
                .iter_mut()
                .zip(&pools)
                .map(|(b, p)| {
                    s.spawn(move || p.install(|| (0..steps).map(|_| b.time(train)).collect()))
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("bench thread panicked"))
                .collect()
        });
        let per_worker = per_worker.into_iter().collect::<Result<Vec<_>>>()?;
        Ok((0..steps)
            .map(|i| per_worker.iter().map(|v| v[i]).sum::<f64>() / (workers * workers) as f64)
            .collect())
    };

    // Warm-up (allocations, page faults, PyTorch's first-iteration costs).
    run_ours(&mut benches, 2, true)?;
    if o.inference {
        run_ours(&mut benches, 1, false)?;
    }
    if let Some(p) = peer.as_mut() {
        p.run(2, true)?;
        if o.inference {
            p.run(1, false)?;
        }
    }
    let rate = |v: &mut Vec<f64>| o.batch as f64 / median(v);
    let (mut ours_t, mut ours_i, mut py_t, mut py_i) = (vec![], vec![], vec![], vec![]);
    for r in 0..o.rounds {
        let mut t = run_ours(&mut benches, o.steps, true)?;
        let mut line = format!("round {}: ours {:.1} samples/s", r + 1, rate(&mut t));
        ours_t.extend(t);
        if let Some(p) = peer.as_mut() {
            let mut t = p.run(o.steps, true)?;
            line += &format!(", pytorch {:.1} samples/s", rate(&mut t));
            py_t.extend(t);
        }
        if o.inference {
            ours_i.extend(run_ours(&mut benches, o.steps, false)?);
            if let Some(p) = peer.as_mut() {
                py_i.extend(p.run(o.steps, false)?);
            }
        }
        say(&line);
    }
    report.ours_train = rate(&mut ours_t);
    if o.inference {
        report.ours_infer = Some(rate(&mut ours_i));
    }
    if let Some(p) = peer {
        p.finish();
        report.torch_train = Some(rate(&mut py_t));
        if o.inference {
            report.torch_infer = Some(rate(&mut py_i));
        }
    }
    Ok(report)
}

/// The PyTorch peer script (`peers/offtanet_torch.py`).
pub const PYTORCH_PEER: &str = include_str!("../peers/offtanet_torch.py");

/// The PyTorch peer: a Python process that runs steps on request.
struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

fn peer_err(message: impl Into<String>) -> Error {
    Error::Peer(message.into())
}

impl Peer {
    /// The running peer and its `ready` line, or `None` where torch does not import.
    fn start(
        python: &str,
        model: &ModelSpec,
        batch: usize,
        threads: usize,
    ) -> Result<Option<(Self, String)>> {
        let ok = Command::new(python)
            .args(["-c", "import torch"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Ok(None);
        }
        let mut child = Command::new(python)
            .arg("-u")
            .arg("-c")
            .arg(PYTORCH_PEER)
            .arg(model.name())
            .arg(batch.to_string())
            .arg(threads.to_string())
            // Idle OpenMP threads must not spin while our side runs.
            .env("OMP_WAIT_POLICY", "PASSIVE")
            .env("OMP_NUM_THREADS", threads.to_string())
            .env("MKL_NUM_THREADS", threads.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| peer_err(format!("starting `{python}`: {e}")))?;
        let stdin = child.stdin.take().ok_or_else(|| peer_err("no stdin"))?;
        let stdout = BufReader::new(child.stdout.take().ok_or_else(|| peer_err("no stdout"))?);
        let mut p = Self {
            child,
            stdin,
            stdout,
        };
        let hello = p.line()?;
        let Some(rest) = hello.strip_prefix("ready") else {
            return Err(peer_err(format!("expected `ready`, found `{hello}`")));
        };
        let rest = rest.trim().to_string();
        Ok(Some((p, rest)))
    }

    fn line(&mut self) -> Result<String> {
        let mut s = String::new();
        let n = self
            .stdout
            .read_line(&mut s)
            .map_err(|e| peer_err(format!("reading its output: {e}")))?;
        if n == 0 {
            return Err(peer_err("exited early"));
        }
        Ok(s.trim().to_string())
    }

    /// Seconds of each of `steps` training steps (or inference forwards).
    fn run(&mut self, steps: usize, train: bool) -> Result<Vec<f64>> {
        let req = format!("{} {steps}\n", if train { "train" } else { "infer" });
        self.stdin
            .write_all(req.as_bytes())
            .and_then(|()| self.stdin.flush())
            .map_err(|e| peer_err(format!("sending a request: {e}")))?;
        let l = self.line()?;
        l.split_whitespace()
            .map(|t| {
                t.parse::<f64>()
                    .map_err(|_| peer_err(format!("said `{l}`")))
            })
            .collect()
    }

    fn finish(mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn a_short_bench_without_peer_reports_positive_rates() {
        let o = TrainBenchOptions {
            model: ModelSpec::OffTaNet(mer_model::ModelConfig::new(mer_model::Variant::Res)),
            batch: 2,
            threads: 1,
            steps: 1,
            rounds: 2,
            mode: BenchMode::Step,
            python: Some("/nonexistent/python".into()),
            inference: true,
        };
        let mut lines = Vec::new();
        let r = bench_train(&o, &mut |l| lines.push(l.to_string())).unwrap();
        assert!(r.ours_train > 0.0 && r.ours_infer.unwrap() > 0.0, "{r:?}");
        assert_eq!((r.torch_train, r.torch_infer), (None, None));
        assert!(r.peer.starts_with("not installed"), "{}", r.peer);
        assert_eq!(lines.len(), 2);
        assert!(lines[1].starts_with("round 2: ours "), "{lines:?}");
    }

    #[test]
    fn the_peer_script_is_python() {
        assert!(PYTORCH_PEER.contains("print(f\"ready torch"));
        assert!(PYTORCH_PEER.contains("variant, batch, threads = sys.argv[1]"));
        for b in Baseline::ALL {
            assert!(
                PYTORCH_PEER.contains(&format!("\"{}\": (", b.name())),
                "{b}"
            );
        }
    }
}
