//! `cargo xtask bench ...` (owned by the training-speed work).
//!
//! `bench train` times our training step (forward, cross-entropy, backward, Adam) and our
//! inference on random inputs, and, where `python3 -c "import torch"` works, PyTorch's on the
//! same settings in the same run, interleaved round by round so that both see the same
//! machine load. Medians over all timed steps.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use mer_model::candle_core::{Device, Tensor};
use mer_model::{ModelConfig, OffTaNet, Trainer, Variant};

/// How the threads are used in `bench train`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// One trainer whose steps use all `--threads` threads.
    Step,
    /// `--threads` independent trainers (one per thread, as one fold per core would be);
    /// the reported rate is their sum.
    Folds,
}

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Training samples per second of one step (batch 64, 3x112x112, Adam).
    Train {
        /// Worker threads (default: RAYON_NUM_THREADS, else all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Batch size.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Model variant.
        #[arg(long, default_value = "ta")]
        variant: String,
        /// Timed training steps per round (after two warm-up steps).
        #[arg(long, default_value_t = 4)]
        steps: usize,
        /// Rounds; ours and PyTorch alternate round by round.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Parallelism inside a step (`step`) or one trainer per thread (`folds`).
        #[arg(long, value_enum, default_value_t = Mode::Step)]
        mode: Mode,
        /// Skip PyTorch even where it is installed.
        #[arg(long)]
        no_pytorch: bool,
        /// The Python interpreter for the PyTorch peer (`$MER_BENCH_PYTHON`, else python3).
        #[arg(long)]
        python: Option<String>,
        /// Also time inference (evaluation mode, same batch).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        inference: bool,
    },
}

pub fn run(c: BenchCmd) -> Result<()> {
    match c {
        BenchCmd::Train {
            threads,
            batch,
            variant,
            steps,
            rounds,
            mode,
            no_pytorch,
            python,
            inference,
        } => train(TrainArgs {
            python: python
                .or_else(|| std::env::var("MER_BENCH_PYTHON").ok())
                .unwrap_or_else(|| "python3".into()),
            threads,
            batch,
            variant,
            steps,
            rounds,
            mode,
            no_pytorch,
            inference,
        }),
    }
}

struct TrainArgs {
    threads: Option<usize>,
    batch: usize,
    variant: String,
    steps: usize,
    rounds: usize,
    mode: Mode,
    no_pytorch: bool,
    python: String,
    inference: bool,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn train(a: TrainArgs) -> Result<()> {
    anyhow::ensure!(
        a.batch >= 1 && a.steps >= 1 && a.rounds >= 1,
        "--batch, --steps and --rounds must be at least 1"
    );
    let variant: Variant = a.variant.parse()?;
    let threads = match a.threads {
        Some(n) => n,
        None => std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    };
    anyhow::ensure!(threads >= 1, "--threads must be at least 1");
    // candle and gemm size their pools from RAYON_NUM_THREADS: set it before the first op.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let pool_threads = if a.mode == Mode::Step { threads } else { 1 };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .context("building the thread pool")?;
    println!(
        "bench train: variant {variant}, batch {}, {threads} thread(s), mode {:?}, {} rounds of {} steps",
        a.batch, a.mode, a.rounds, a.steps
    );

    let mut peer = if a.no_pytorch {
        None
    } else {
        Peer::start(
            &a.python,
            variant,
            a.batch,
            pool_threads.max(threads),
            a.inference,
        )?
    };
    if a.mode == Mode::Folds && peer.is_some() {
        println!("note: the PyTorch peer runs one process with {threads} threads (its own intra-op parallelism)");
    }

    let workers = if a.mode == Mode::Folds { threads } else { 1 };
    let mut benches: Vec<Ours> = (0..workers)
        .map(|i| Ours::new(variant, a.batch, i as u64))
        .collect::<Result<_>>()?;
    // Fold mode: each trainer runs on its own single-thread pool.
    let pools: Vec<rayon::ThreadPool> = if a.mode == Mode::Folds {
        (0..workers)
            .map(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build())
            .collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };

    let run_ours = |benches: &mut Vec<Ours>, steps: usize, train: bool| -> Result<Vec<f64>> {
        if pools.is_empty() {
            let b = &mut benches[0];
            return (0..steps).map(|_| b.time(train)).collect();
        }
        // All trainers at once; the rate is the sum of theirs (time per step of each).
        let results: Vec<Result<Vec<f64>>> = std::thread::scope(|s| {
            let hs: Vec<_> = benches
                .iter_mut()
                .zip(&pools)
                .map(|(b, p)| {
                    s.spawn(move || {
                        p.install(|| {
                            (0..steps)
                                .map(|_| b.time(train))
                                .collect::<Result<Vec<f64>>>()
                        })
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("bench thread panicked"))
                .collect()
        });
        let mut per_step = Vec::new();
        for r in results {
            per_step.push(r?);
        }
        // Effective time per batch: step time divided by the number of concurrent trainers.
        Ok((0..steps)
            .map(|i| per_step.iter().map(|v| v[i]).sum::<f64>() / (workers * workers) as f64)
            .collect())
    };

    // Warm-up (allocations, page faults, PyTorch's first-iteration costs).
    run_ours(&mut benches, 2, true)?;
    if a.inference {
        run_ours(&mut benches, 1, false)?;
    }
    if let Some(p) = peer.as_mut() {
        p.run(2, true)?;
        if a.inference {
            p.run(1, false)?;
        }
    }

    let (mut ours_t, mut ours_i, mut py_t, mut py_i) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 0..a.rounds {
        let t = run_ours(&mut benches, a.steps, true)?;
        ours_t.extend(&t);
        let mut line = format!(
            "round {}: ours {:.1} samples/s",
            r + 1,
            a.batch as f64 / median(&mut t.clone())
        );
        if let Some(p) = peer.as_mut() {
            let t = p.run(a.steps, true)?;
            line += &format!(
                ", pytorch {:.1} samples/s",
                a.batch as f64 / median(&mut t.clone())
            );
            py_t.extend(t);
        }
        if a.inference {
            ours_i.extend(run_ours(&mut benches, a.steps, false)?);
            if let Some(p) = peer.as_mut() {
                py_i.extend(p.run(a.steps, false)?);
            }
        }
        println!("{line}");
    }
    let rate = |v: &mut Vec<f64>| a.batch as f64 / median(v);
    let ours = rate(&mut ours_t);
    if a.inference {
        println!("inference ours: {:.1} samples/s", rate(&mut ours_i));
        if peer.is_some() {
            println!("inference pytorch: {:.1} samples/s", rate(&mut py_i));
        }
    }
    // 49 folds x 201 epochs x 294 samples (each fold trains on the others' samples).
    let sample_steps = 201.0 * (49.0 * 294.0 - 294.0);
    println!(
        "paper protocol (49 folds x 201 epochs, one configuration) at this rate: {:.1} h",
        sample_steps / ours / 3600.0
    );
    if let Some(p) = peer {
        let py = rate(&mut py_t);
        p.finish();
        println!("pytorch: {py:.1} samples/s");
        println!("ratio: ours/pytorch = {:.2}", ours / py);
    } else if !a.no_pytorch {
        println!(
            "pytorch: not installed (`{} -c \"import torch\"` failed), not compared",
            a.python
        );
    }
    println!("ours: {ours:.1} samples/s");
    Ok(())
}

/// Our model, trainer and a fixed random batch.
struct Ours {
    trainer: Trainer,
    x: Tensor,
    labels: Tensor,
}

impl Ours {
    fn new(variant: Variant, batch: usize, _seed: u64) -> Result<Self> {
        let dev = Device::Cpu;
        let cfg = ModelConfig::new(variant);
        let model = OffTaNet::random(&cfg, &dev)?;
        let x = Tensor::randn(0f32, 1.0, (batch, cfg.in_channels, 112, 112), &dev)?;
        let labels: Vec<u32> = (0..batch as u32).map(|i| i % 3).collect();
        let labels = Tensor::new(labels.as_slice(), &dev)?;
        Ok(Self {
            trainer: Trainer::new(model)?,
            x,
            labels,
        })
    }

    /// Seconds of one training step (or one evaluation-mode forward).
    fn time(&mut self, train: bool) -> Result<f64> {
        let t0 = Instant::now();
        if train {
            let loss = self.trainer.step(&self.x, &self.labels)?;
            anyhow::ensure!(loss.is_finite(), "training loss is {loss}");
        } else {
            let y = self.trainer.model().forward_t(&self.x, false)?;
            let _ = y.sum_all()?.to_scalar::<f32>()?;
        }
        Ok(t0.elapsed().as_secs_f64())
    }
}

/// The PyTorch peer: a Python process that runs steps on request.
struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    fn start(
        python: &str,
        variant: Variant,
        batch: usize,
        threads: usize,
        _inference: bool,
    ) -> Result<Option<Self>> {
        let ok = Command::new(python)
            .args(["-c", "import torch"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Ok(None);
        }
        // `python3 -` would read the script up to end of input, leaving no channel for the
        // requests: a bootstrap reads the script up to a marker line, then runs it.
        let mut child = Command::new(python)
            .arg("-u")
            .arg("-c")
            .arg(BOOTSTRAP)
            .arg(variant.name())
            .arg(batch.to_string())
            .arg(threads.to_string())
            // Idle OpenMP threads must not spin while our side runs.
            .env("OMP_WAIT_POLICY", "PASSIVE")
            .env("OMP_NUM_THREADS", threads.to_string())
            .env("MKL_NUM_THREADS", threads.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting `{python} -`"))?;
        let mut stdin = child.stdin.take().context("python stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("python stdout")?);
        stdin.write_all(PYTORCH_SCRIPT.as_bytes())?;
        stdin.write_all(b"\n__MAIN__\n")?;
        stdin.flush()?;
        let mut p = Self {
            child,
            stdin,
            stdout,
        };
        let hello = p.line()?;
        if !hello.starts_with("ready") {
            bail!("PyTorch peer: expected `ready`, found `{hello}`");
        }
        println!("pytorch peer: {}", hello.trim_start_matches("ready").trim());
        Ok(Some(p))
    }

    fn line(&mut self) -> Result<String> {
        let mut s = String::new();
        if self.stdout.read_line(&mut s)? == 0 {
            bail!("PyTorch peer exited early");
        }
        Ok(s.trim().to_string())
    }

    /// Seconds of each of `steps` training steps (or inference forwards).
    fn run(&mut self, steps: usize, train: bool) -> Result<Vec<f64>> {
        writeln!(
            self.stdin,
            "{} {steps}",
            if train { "train" } else { "infer" }
        )?;
        self.stdin.flush()?;
        let l = self.line()?;
        l.split_whitespace()
            .map(|t| {
                t.parse::<f64>()
                    .with_context(|| format!("PyTorch peer said `{l}`"))
            })
            .collect()
    }

    fn finish(mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}

/// Reads the peer script from stdin up to the `__MAIN__` line and runs it.
const BOOTSTRAP: &str = "import sys\nsrc = []\nwhile True:\n    l = sys.stdin.readline()\n    if not l or l.strip() == '__MAIN__':\n        break\n    src.append(l)\nexec(compile(''.join(src), 'offtanet_peer.py', 'exec'))\n";

/// Off-TANet and its variants in PyTorch, written from `../shared/docs/reference-notes.md`.
/// The script serves `train K` /
/// `infer K` requests with the seconds of each step on one line.
const PYTORCH_SCRIPT: &str = r#"
import sys, time, math
import torch
import torch.nn as nn
import torch.nn.functional as F

variant, batch, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)

def head_widths(c, heads):
    return [c // heads + (1 if i < c % heads else 0) for i in range(heads)]

def pos_code(size):
    p = []
    for i in range(size):
        a = 1.0 / 10000.0 ** ((i // 2) / size)
        p.append(math.sin(a) if i % 2 == 0 else math.cos(a))
    m = torch.tensor([[p[a] + p[b] for b in range(size)] for a in range(size)], dtype=torch.float64)
    return m.float()

class Head(nn.Module):
    def __init__(self, cin, d, size):
        super().__init__()
        self.w_q = nn.Conv2d(cin, d, 1)
        self.w_k = nn.Conv2d(cin, d, 1)
        self.w_v = nn.Conv2d(cin, d, 1)
        self.register_buffer("pos_t", pos_code(size).t().contiguous())
    def forward(self, x):
        n, _, h, w = x.shape
        q, k, v = self.w_q(x), self.w_k(x), self.w_v(x)
        logits = q @ k.transpose(2, 3) + q @ self.pos_t
        d = q.shape[1]
        attn = F.softmax(logits.reshape(n, d, h * h), dim=-1).reshape(n, d, h, h)
        return attn * v

class MHSA(nn.Module):
    def __init__(self, cin, widths, size):
        super().__init__()
        self.sa_blocks = nn.ModuleList([Head(cin, d, size) for d in widths])
    def forward(self, x):
        return torch.cat([b(x) for b in self.sa_blocks], 1)

class CA(nn.Module):
    def __init__(self, c):
        super().__init__()
        h = max(c // 16, 1)
        self.fc1 = nn.Conv2d(c, h, 1, bias=False)
        self.fc2 = nn.Conv2d(h, c, 1, bias=False)
    def forward(self, x):
        mlp = lambda z: self.fc2(F.relu(self.fc1(z)))
        return torch.sigmoid(mlp(F.adaptive_avg_pool2d(x, 1)) + mlp(F.adaptive_max_pool2d(x, 1)))

class SpA(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, 3, padding=1, bias=False)
    def forward(self, x):
        s = torch.cat([x.mean(1, keepdim=True), x.max(1, keepdim=True)[0]], 1)
        return torch.sigmoid(self.conv1(s))

def cbr(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

class Residual(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                  nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())
        self.botneck = nn.Conv2d(cin, cout, 1)
    def forward(self, x):
        return F.max_pool2d(self.conv(x) + self.botneck(x), 2)

class Enhanced(nn.Module):
    def __init__(self, cin, cout, size, cbam, mhsa, conv2):
        super().__init__()
        self.conv1 = cbr(cin, cin)
        self.conv2 = cbr(cin, cout) if conv2 else None
        self.botneck = nn.Conv2d(cin, cout, 1)
        self.ca = CA(cin) if cbam else None
        self.spa = SpA() if cbam else None
        self.sa = MHSA(cin, head_widths(cin if conv2 else cout, 4), size) if mhsa else None
    def forward(self, x):
        h = self.conv1(x)
        if self.ca is not None:
            h = h * self.ca(h)
            h = h * self.spa(h)
        if self.sa is not None:
            h = self.sa(h)
        if self.conv2 is not None:
            h = self.conv2(h)
        return F.max_pool2d(h + self.botneck(x), 2)

class Bot(nn.Module):
    def __init__(self, cin, cout, size):
        super().__init__()
        w = head_widths(cout, 4)
        self.sa1 = MHSA(cin, w, size)
        self.sa2 = MHSA(cout, w, size)
        self.botneck = nn.Conv2d(cin, cout, 1)
    def forward(self, x):
        return F.max_pool2d(self.sa2(self.sa1(x)) + self.botneck(x), 2)

class OffTaNet(nn.Module):
    def __init__(self, variant):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 8, 7, stride=2, padding=3), nn.ReLU(), nn.BatchNorm2d(8))
        if variant == "all-ta":
            self.res1 = Enhanced(8, 18, 56, True, True, True)
            self.res2 = Enhanced(18, 28, 28, True, True, True)
        else:
            self.res1 = Residual(8, 18)
            self.res2 = Residual(18, 28)
        self.eres = {
            "res": lambda: Residual(28, 8),
            "cbam": lambda: Enhanced(28, 8, 14, True, False, True),
            "sa": lambda: Enhanced(28, 8, 14, False, True, False),
            "bot": lambda: Bot(28, 8, 14),
            "ta": lambda: Enhanced(28, 8, 14, True, True, True),
            "all-ta": lambda: Enhanced(28, 8, 14, True, True, True),
        }[variant]()
        self.dense = nn.Sequential(nn.Linear(392, 64), nn.ReLU(), nn.Dropout(0.5),
                                   nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 3))
    def forward(self, x):
        x = self.eres(self.res2(self.res1(self.conv1(x))))
        return self.dense(torch.flatten(x, 1))

torch.manual_seed(0)
model = OffTaNet(variant)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
x = torch.randn(batch, 3, 112, 112)
y = torch.arange(batch) % 3
nparams = sum(p.numel() for p in model.parameters())

def step():
    model.train()
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss.item()

def infer():
    model.eval()
    with torch.no_grad():
        model(x).sum().item()

print(f"ready torch {torch.__version__}, {torch.get_num_threads()} thread(s), {nparams} params", flush=True)
for line in sys.stdin:
    parts = line.split()
    if not parts or parts[0] == "quit":
        break
    k = int(parts[1])
    f = step if parts[0] == "train" else infer
    ts = []
    for _ in range(k):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    print(" ".join(f"{t:.6f}" for t in ts), flush=True)
"#;
