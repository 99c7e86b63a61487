//! `cargo xtask flow`: TV-L1 optical flow (and optical strain) of one pair, or
//! of every pair of a CSV list on all cores.

use crate::util;
use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mer_flow::strain::{optical_strain, StrainFormula};
use mer_flow::{io, Flow, TvL1, TvL1Params, Workspace};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct FlowArgs {
    /// First (onset) image: any 8-bit format OpenCV reads.
    #[arg(required_unless_present = "pairs", conflicts_with = "pairs")]
    pub prev: Option<PathBuf>,
    /// Second (apex) image.
    #[arg(required_unless_present = "pairs", conflicts_with = "pairs")]
    pub next: Option<PathBuf>,
    /// Output flow: `.flo` (Middlebury) or `.npy` ([H,W,2] f32).
    #[arg(short = 'o', long = "out", required_unless_present = "pairs")]
    pub out: Option<PathBuf>,
    /// Also write the optical strain magnitude as `.npy` ([H,W] f32).
    #[arg(long)]
    pub strain: Option<PathBuf>,
    /// A CSV list with the header `prev,next,out` (and optionally `strain`), one
    /// pair per line. Relative image paths are looked up from the current
    /// folder, then from the list's folder; relative outputs go under the
    /// current folder.
    #[arg(long)]
    pub pairs: Option<PathBuf>,
    /// Resize to NxN (bicubic, before the gray conversion, as the reference pipeline).
    #[arg(long)]
    pub size: Option<usize>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Strain formula: `paper` (eq. 4) or `reference` (the published code's).
    #[arg(long, default_value = "paper")]
    pub strain_formula: StrainFormula,
}

pub fn run(a: FlowArgs) -> Result<ExitCode> {
    util::set_threads(a.threads)?;
    let tvl1 = TvL1::new(TvL1Params::default())?;
    match &a.pairs {
        Some(list) => run_pairs(&a, list, &tvl1),
        None => {
            let (prev, next, out) = (
                a.prev.as_ref().unwrap(),
                a.next.as_ref().unwrap(),
                a.out.as_ref().unwrap(),
            );
            let job = Job {
                line: 0,
                prev: prev.clone(),
                next: next.clone(),
                out: out.clone(),
                strain: a.strain.clone(),
            };
            let flow = job.run(&tvl1, &mut Workspace::default(), &a, true)?;
            let mean = flow
                .data()
                .chunks_exact(2)
                .map(|c| f64::from(c[0]).hypot(f64::from(c[1])))
                .sum::<f64>()
                / (flow.width() * flow.height()) as f64;
            println!(
                "{}: {}x{} flow, mean magnitude {mean:.4} px",
                out.display(),
                flow.width(),
                flow.height()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

struct Job {
    line: usize,
    prev: PathBuf,
    next: PathBuf,
    out: PathBuf,
    strain: Option<PathBuf>,
}

impl Job {
    fn run(&self, tvl1: &TvL1, ws: &mut Workspace, a: &FlowArgs, whole_pool: bool) -> Result<Flow> {
        let i0 = util::load_gray(&self.prev, a.size)?;
        let i1 = util::load_gray(&self.next, a.size)?;
        let mut flow = Flow::zeros(1, 1)?;
        let tv = if whole_pool {
            tvl1.clone()
        } else {
            tvl1.clone().with_parallel_from(usize::MAX)
        };
        tv.compute_into(ws, &i0, &i1, None, &mut flow)
            .with_context(|| format!("{} -> {}", self.prev.display(), self.next.display()))?;
        write_flow(&self.out, &flow)?;
        if let Some(s) = &self.strain {
            let st = optical_strain(&flow, a.strain_formula);
            io::write_npy(s, &[flow.height(), flow.width()], &st)?;
        }
        Ok(flow)
    }
}

fn write_flow(path: &Path, flow: &Flow) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => io::write_flow_npy(path, flow)?,
        Some("flo") => io::write_flo(path, flow)?,
        _ => bail!("{}: output must end in .flo or .npy", path.display()),
    }
    Ok(())
}

/// Parses the list; returns the jobs and the per-line errors.
fn parse_pairs(list: &Path) -> Result<(Vec<Job>, Vec<(usize, String)>)> {
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_path(list)
        .with_context(|| format!("reading {}", list.display()))?;
    let headers = rdr
        .headers()
        .with_context(|| format!("{}: reading the header", list.display()))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (Some(ip), Some(in_), Some(io_)) = (col("prev"), col("next"), col("out")) else {
        bail!(
            "{}: line 1: header must name the columns prev,next,out; found {:?}",
            list.display(),
            headers.iter().collect::<Vec<_>>()
        );
    };
    let is_ = col("strain");
    let base = list.parent().unwrap_or(Path::new("."));
    let resolve = |p: &str| {
        let p = PathBuf::from(p);
        if p.is_absolute() || p.exists() || !base.join(&p).exists() {
            p
        } else {
            base.join(p)
        }
    };
    let (mut jobs, mut bad) = (Vec::new(), Vec::new());
    for (i, rec) in rdr.records().enumerate() {
        let line = i + 2;
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                bad.push((line, format!("unreadable line: {e}")));
                continue;
            }
        };
        if rec.iter().all(|f| f.is_empty()) {
            continue;
        }
        let get = |k: usize| rec.get(k).filter(|s| !s.is_empty());
        match (get(ip), get(in_), get(io_)) {
            (Some(p), Some(n), Some(o)) => jobs.push(Job {
                line,
                prev: resolve(p),
                next: resolve(n),
                out: PathBuf::from(o),
                strain: is_.and_then(get).map(PathBuf::from),
            }),
            _ => bad.push((
                line,
                format!(
                    "expected prev,next,out; found {:?}",
                    rec.iter().collect::<Vec<_>>()
                ),
            )),
        }
    }
    Ok((jobs, bad))
}

fn run_pairs(a: &FlowArgs, list: &Path, tvl1: &TvL1) -> Result<ExitCode> {
    let (jobs, mut bad) = parse_pairs(list)?;
    let pb = ProgressBar::new(jobs.len() as u64).with_style(
        ProgressStyle::with_template(
            "{spinner} flow [{bar:40}] {pos}/{len} pairs, {per_sec}, ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let failed: Vec<(usize, String)> = jobs
        .par_iter()
        .map_init(Workspace::default, |ws, job| {
            let r = job.run(tvl1, ws, a, false);
            pb.inc(1);
            r.err().map(|e| (job.line, format!("{e:#}")))
        })
        .flatten()
        .collect();
    pb.finish_and_clear();
    let done = jobs.len() - failed.len();
    bad.extend(failed);
    bad.sort();
    for (line, e) in &bad {
        eprintln!("{}: line {line}: {e}", list.display());
    }
    println!(
        "{done} of {} pairs written; {} failed",
        done + bad.len(),
        bad.len()
    );
    Ok(if bad.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
