//! The run's outputs, made from the cells on disk (whoever trained them: one process or
//! many shards): `summary.csv` (one line per experiment: means over seeds, intervals,
//! differences to Off-TANet), `seeds.csv` (one line per experiment and seed),
//! `predictions/<experiment>.csv` (the honest epoch, the `fold,truth,pred` format of
//! `cargo xtask metrics`), `REPORT.md` (Tables 3 and 4 in the paper's layout under both
//! protocols with their uncertainty, Fig. 4, Table 5 and Fig. 5, confusion matrices,
//! learning curves, the cells that are missing), the PNG figures and `manifest.json` (the
//! settings and every invocation's record).
//!
//! The report is a function of the run folder's settings and finished cells only, so a
//! sharded run and a single-process run of the same settings give the same report, number
//! for number (only the lines starting `- Invocation` tell who trained what and how fast).

use mer_common::fmt::thousands;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use mer_model::CLASS_NAMES;
use serde::{Deserialize, Serialize};

use crate::attention::{analyse_attention, format_table5, AttentionReport};
use crate::config::{ExperimentSpec, Schedule};
use crate::io::{write_atomic, write_json};
use crate::metrics::{format_predictions, ClassScores, Confusion};
use crate::plot::{confusion_png, lines_png, scatter_png, Point, Series};
use crate::protocol::{evaluate_protocols, fold_predictions, ProtocolScores};
use crate::run_dir::{fingerprint, CellKey, InvocationRecord, RunFolder, RunSettings};
use crate::runner::Provenance;
use crate::stats::{bootstrap, mean_sd, paired_difference, Estimate, REPLICATES};
use crate::Result;

/// The experiment every other is compared with (paired differences).
pub const REFERENCE_EXPERIMENT: &str = "ta";

/// The id of the table drawn in the paper's Table 2 layout (and plotted as Fig. 4).
pub const TABLE2: &str = "table2";

/// One seed's scores of an experiment (every fold finished).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedScores {
    /// The seed.
    pub seed: u64,
    /// Both protocols' scores.
    pub scores: ProtocolScores,
}

/// Mean and standard deviation over seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanSd {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (0 with one seed).
    pub sd: f64,
}

impl MeanSd {
    fn of(v: &[f64]) -> Self {
        let (mean, sd) = mean_sd(v);
        MeanSd { mean, sd }
    }
}

/// One observation epoch of the learning curve, over seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// The epoch (0-based).
    pub epoch: usize,
    /// Pooled UAR.
    pub pooled_uar: MeanSd,
    /// Mean per-fold UAR.
    pub fold_mean_uar: MeanSd,
}

/// An experiment's scores over its complete seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// The seeds used (every fold finished).
    pub seeds: Vec<u64>,
    /// Honest protocol, pooled UAR.
    pub uar: MeanSd,
    /// Honest protocol, pooled UF1.
    pub uf1: MeanSd,
    /// Honest protocol, mean per-fold UAR.
    pub fold_mean_uar: MeanSd,
    /// Honest protocol, mean per-fold UF1.
    pub fold_mean_uf1: MeanSd,
    /// Paper protocol UAR.
    pub paper_uar: MeanSd,
    /// Paper protocol UF1.
    pub paper_uf1: MeanSd,
    /// The paper protocol's epochs, per seed.
    pub paper_epochs: Vec<usize>,
    /// Pooled UAR/UF1 (mean over the seeds) with 95% bootstrap intervals over folds.
    pub interval: Estimate,
    /// Minus Off-TANet's, paired (common seeds, same folds), with 95% intervals; absent
    /// for Off-TANet itself or without a common complete seed.
    pub vs_reference: Option<Estimate>,
    /// Seeds of the paired difference.
    pub paired_seeds: usize,
    /// The honest epoch's pooled confusion matrix, summed over the seeds.
    pub confusion: Confusion,
    /// Its per-class scores.
    pub per_class: Vec<ClassScores>,
    /// The learning curve.
    pub curve: Vec<CurvePoint>,
}

/// One experiment's line of the summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentSummary {
    /// The experiment's definition.
    pub spec: ExperimentSpec,
    /// Trainable parameters.
    pub params: usize,
    /// Multiply-accumulates per sample (torchstat's "Flops" count: the paper's 30.08M).
    pub macs: u64,
    /// torchstat's MemR+W (MiB, batch 1).
    #[serde(default)]
    pub mem_rw_mib: Option<f64>,
    /// The experiment's own schedule in this run (epochs, batch, optimiser).
    pub schedule: Schedule,
    /// The seeds asked for.
    pub seeds: Vec<u64>,
    /// Finished cells (over all its seeds).
    pub cells_done: usize,
    /// All its cells (seeds x folds).
    pub cells_total: usize,
    /// Scores of every complete seed.
    pub per_seed: Vec<SeedScores>,
    /// Over the complete seeds, once there is one.
    pub aggregate: Option<Aggregate>,
}

/// What [`write_report`] made.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportOutcome {
    /// `REPORT.md`.
    pub report: PathBuf,
    /// Per experiment.
    pub summaries: Vec<ExperimentSummary>,
    /// The cells not finished yet.
    pub missing: Vec<CellKey>,
    /// Cells finished.
    pub cells_done: usize,
    /// Cells expected.
    pub cells_total: usize,
}

/// The header of `summary.csv`.
pub const SUMMARY_HEADER: &str = "experiment,variant,input,params,macs,folds,honest_epoch,pooled_uar,pooled_uf1,fold_mean_uar,fold_mean_uf1,paper_epoch,paper_uar,paper_uf1,seeds,pooled_uar_sd,pooled_uf1_sd,uar_ci_low,uar_ci_high,uf1_ci_low,uf1_ci_high,diff_uar,diff_uar_low,diff_uar_high,diff_uf1,diff_uf1_low,diff_uf1_high,cells_done,cells_total";

/// The header of `seeds.csv`.
pub const SEEDS_HEADER: &str = "experiment,seed,folds,honest_epoch,pooled_uar,pooled_uf1,fold_mean_uar,fold_mean_uf1,paper_epoch,paper_uar,paper_uf1";

fn summary_csv(rows: &[ExperimentSummary], folds: usize) -> String {
    let mut s = format!("{SUMMARY_HEADER}\n");
    for r in rows {
        let e = &r.spec;
        let honest_epoch = r.schedule.honest_epoch();
        write!(
            s,
            "{},{},{},{},{},",
            e.name,
            e.model_label(),
            e.input,
            r.params,
            r.macs
        )
        .ok();
        match &r.aggregate {
            Some(a) => {
                let paper_epoch = if a.paper_epochs.len() == 1 {
                    a.paper_epochs[0].to_string()
                } else {
                    String::new()
                };
                write!(
                    s,
                    "{folds},{honest_epoch},{:.6},{:.6},{:.6},{:.6},{paper_epoch},{:.6},{:.6},{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6}",
                    a.uar.mean, a.uf1.mean, a.fold_mean_uar.mean, a.fold_mean_uf1.mean,
                    a.paper_uar.mean, a.paper_uf1.mean, a.seeds.len(), a.uar.sd, a.uf1.sd,
                    a.interval.uar_ci.low, a.interval.uar_ci.high, a.interval.uf1_ci.low, a.interval.uf1_ci.high
                )
                .ok();
                match &a.vs_reference {
                    Some(d) => write!(
                        s,
                        ",{:.6},{:.6},{:.6},{:.6},{:.6},{:.6}",
                        d.uar, d.uar_ci.low, d.uar_ci.high, d.uf1, d.uf1_ci.low, d.uf1_ci.high
                    ),
                    None => write!(s, ",,,,,,"),
                }
                .ok();
            }
            // Not scored yet: every score column empty.
            None => s.push_str(&",".repeat(21)),
        }
        writeln!(s, ",{},{}", r.cells_done, r.cells_total).ok();
    }
    s
}

fn seeds_csv(rows: &[ExperimentSummary]) -> String {
    let mut s = format!("{SEEDS_HEADER}\n");
    for r in rows {
        for x in &r.per_seed {
            let p = &x.scores;
            writeln!(
                s,
                "{},{},{},{},{:.6},{:.6},{:.6},{:.6},{},{:.6},{:.6}",
                r.spec.name,
                x.seed,
                p.folds,
                p.honest_epoch,
                p.honest_pooled.uar,
                p.honest_pooled.uf1,
                p.honest_fold_mean.uar,
                p.honest_fold_mean.uf1,
                p.paper_epoch,
                p.paper.uar,
                p.paper.uf1
            )
            .ok();
        }
    }
    s
}

/// The machine, for the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Host name.
    pub hostname: String,
    /// CPU model.
    pub cpu: String,
    /// Logical cores available.
    pub cores: usize,
    /// Memory (GiB).
    pub memory_gib: f64,
    /// Operating system.
    pub os: String,
}

impl Machine {
    /// What this process can see of the machine.
    pub fn detect() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let field = |text: &str, key: &str| {
            text.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_once([':', '=']))
                .map(|(_, v)| v.trim().trim_matches('"').to_string())
                .unwrap_or_default()
        };
        let kib: f64 = field(&read("/proc/meminfo"), "MemTotal")
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap_or(0.0);
        Machine {
            hostname: read("/proc/sys/kernel/hostname").trim().to_string(),
            cpu: field(&read("/proc/cpuinfo"), "model name"),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: (kib / (1024.0 * 1024.0) * 10.0).round() / 10.0,
            os: {
                let p = field(&read("/etc/os-release"), "PRETTY_NAME");
                if p.is_empty() {
                    std::env::consts::OS.to_string()
                } else {
                    p
                }
            },
        }
    }
}

fn protocol_note(synthetic: bool) -> String {
    let mut s = String::new();
    if synthetic {
        s.push_str(
            "> **Synthetic data: these numbers are not the paper's.** The run used the embedded synthetic \
database (procedural faces with FACS-like local motions, written in the real databases' layouts). It shows \
that the whole pipeline works and how far each model gets above chance on data that is learnable by \
construction; it says nothing about real micro-expressions. The paper's numbers (CASME + CASME II + \
CAS(ME)^2, 201 epochs) are shown beside ours for reference only.\n\n",
        );
    }
    s.push_str(
        "Protocols (both always reported):\n\n\
- **Honest** (the headline): the epoch is fixed in advance (the last epoch); UAR and UF1 of all folds' \
predictions pooled into one confusion matrix (MEGC style), and the mean of the per-fold scores at that epoch.\n\
- **Paper**: the mean of the per-fold UAR and UF1 at the observation epoch with the best mean UAR. \
This picks the epoch on the test folds, so it is optimistic; UF1 is taken at the epoch chosen by UAR.\n\n\
Per-fold scores use scikit-learn's macro averages over the classes present in the fold's truth or \
predictions (a 0/0 recall or F1 counts as 0). A classifier that ignores its input has an expected UAR \
of 1/3 (chance). Params: trainable parameters. MACs: multiply-accumulates per sample as torchstat counts \
them (its \"Flops\" column, the paper's 30.08M for Off-TANet).\n\n",
    );
    s
}

/// `manifest.json`: provenance of a run folder, rewritten by every report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The run.
    pub run: String,
    /// Source commit of the process that made the report.
    pub commit: String,
    /// Its command line.
    pub command: String,
    /// The run's settings (`run.json`).
    pub settings: RunSettings,
    /// Hash of the experiments file's text when the report was made.
    pub experiments_file_hash: String,
    /// The machine that made the report.
    pub machine: Machine,
    /// Every invocation that worked on the run, oldest first (`invocations/*.json`).
    pub invocations: Vec<InvocationRecord>,
}

fn opt4(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| format!("{v:.4}"))
}

fn mean_cell(m: &MeanSd, seeds: usize, bold: bool) -> String {
    let b = if bold { "**" } else { "" };
    if seeds > 1 {
        format!("{b}{:.4}{b} ± {:.4}", m.mean, m.sd)
    } else {
        format!("{b}{:.4}{b}", m.mean)
    }
}

fn diff_cell(v: f64, low: f64, high: f64) -> String {
    let star = if low > 0.0 || high < 0.0 { " *" } else { "" };
    format!("{v:+.4} [{low:+.3}, {high:+.3}]{star}")
}

/// A row of a report table: label, experiment, the paper's UAR and UF1.
type TableLine<'a> = (
    String,
    Option<&'a ExperimentSummary>,
    Option<f64>,
    Option<f64>,
);

/// A report table.
fn table_md(title: &str, rows: &[TableLine]) -> String {
    let mut s = format!("### {title}\n\n");
    s.push_str("| Model | UAR | UF1 | UAR 95% CI | UF1 95% CI | ΔUAR vs Off-TANet [95% CI] | ΔUF1 vs Off-TANet [95% CI] | UAR (fold mean) | UF1 (fold mean) | UAR (paper protocol) | UF1 (paper protocol) | Seeds | Params | MACs | Paper UAR | Paper UF1 |\n");
    s.push_str(
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (label, e, pu, pf) in rows {
        let (pu, pf) = (opt4(*pu), opt4(*pf));
        match e {
            Some(e) => match &e.aggregate {
                Some(a) => {
                    let k = a.seeds.len();
                    let ci = |i: &crate::stats::Interval| format!("[{:.4}, {:.4}]", i.low, i.high);
                    let (du, df) = match &a.vs_reference {
                        Some(d) => (
                            diff_cell(d.uar, d.uar_ci.low, d.uar_ci.high),
                            diff_cell(d.uf1, d.uf1_ci.low, d.uf1_ci.high),
                        ),
                        None if e.spec.name == REFERENCE_EXPERIMENT => ("(reference)".into(), "(reference)".into()),
                        None => (String::new(), String::new()),
                    };
                    let epoch = if k == 1 { format!(" (ep. {})", a.paper_epochs[0]) } else { String::new() };
                    let seeds = if k == e.seeds.len() { k.to_string() } else { format!("{k} of {}", e.seeds.len()) };
                    writeln!(
                        s,
                        "| {label} | {} | {} | {} | {} | {du} | {df} | {} | {} | {} | {}{epoch} | {seeds} | {} | {:.2}M | {pu} | {pf} |",
                        mean_cell(&a.uar, k, true), mean_cell(&a.uf1, k, true),
                        ci(&a.interval.uar_ci), ci(&a.interval.uf1_ci),
                        mean_cell(&a.fold_mean_uar, k, false), mean_cell(&a.fold_mean_uf1, k, false),
                        mean_cell(&a.paper_uar, k, false), mean_cell(&a.paper_uf1, k, false),
                        thousands(e.params as u64), e.macs as f64 / 1e6
                    )
                }
                None => writeln!(
                    s,
                    "| {label} | incomplete ({}/{} cells) | | | | | | | | | | | {} | {:.2}M | {pu} | {pf} |",
                    e.cells_done, e.cells_total, thousands(e.params as u64), e.macs as f64 / 1e6
                ),
            },
            None => writeln!(s, "| {label} | not run | | | | | | | | | | | | | {pu} | {pf} |"),
        }
        .expect("writing to a String");
    }
    s.push('\n');
    s
}

/// Table 2 in the paper's layout, sorted by our UAR (rows not scored yet last): both
/// protocols, Params, Flops and MemR+W (torchstat's rules, batch 1), the experiment's
/// epochs, and the paper's figures beside ours. A model trained on fewer than half the
/// run's epochs (those of the experiments without a schedule of their own) is marked, with
/// a note saying so.
fn table2_md(t: &crate::config::TableSpec, summaries: &[ExperimentSummary]) -> String {
    let mut rows: Vec<(&crate::config::TableRow, Option<&ExperimentSummary>)> = t
        .rows
        .iter()
        .map(|r| (r, summaries.iter().find(|s| s.spec.name == r.experiment)))
        .collect();
    let uar = |e: &Option<&ExperimentSummary>| {
        e.and_then(|e| e.aggregate.as_ref())
            .map_or(f64::NEG_INFINITY, |a| a.uar.mean)
    };
    rows.sort_by(|a, b| uar(&b.1).total_cmp(&uar(&a.1)));
    // The run's own epochs (an experiment without a schedule of its own trains them).
    let run_epochs = summaries
        .iter()
        .filter(|e| !e.spec.schedules.contains_key(&e.schedule.name))
        .map(|e| e.schedule.epochs)
        .max()
        .unwrap_or(0);
    let mut s = format!("### {}\n\n", t.title);
    s.push_str("| Model | UAR | UF1 | UAR (paper protocol) | UF1 (paper protocol) | Params | Flops | MemR+W | Epochs | Paper UAR | Paper UF1 | Paper Params | Paper Flops | Paper MemR+W |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut short = Vec::new();
    for (r, e) in &rows {
        let paper = format!(
            "{} | {} | {} | {} | {}",
            opt4(r.paper_uar),
            opt4(r.paper_uf1),
            r.paper_params.as_deref().unwrap_or(""),
            r.paper_flops.as_deref().unwrap_or(""),
            r.paper_mem_rw.as_deref().unwrap_or("")
        );
        let Some(e) = e else {
            writeln!(s, "| {} | not run | | | | | | | | {paper} |", r.label).ok();
            continue;
        };
        let mark = if 2 * e.schedule.epochs < run_epochs {
            short.push(format!(
                "{} trained {} epoch(s), the run's {run_epochs}",
                r.label, e.schedule.epochs
            ));
            " †"
        } else {
            ""
        };
        let cost = format!(
            "{} | {} | {} | {}",
            thousands(e.params as u64),
            mer_model::baselines::torchstat_format(e.macs as f64, 1000.0),
            e.mem_rw_mib.map_or(String::new(), |m| format!("{m:.2}MB")),
            e.schedule.epochs
        );
        match &e.aggregate {
            Some(a) => {
                let k = a.seeds.len();
                writeln!(
                    s,
                    "| {}{mark} | {} | {} | {} | {} | {cost} | {paper} |",
                    r.label,
                    mean_cell(&a.uar, k, true),
                    mean_cell(&a.uf1, k, true),
                    mean_cell(&a.paper_uar, k, false),
                    mean_cell(&a.paper_uf1, k, false)
                )
                .ok();
            }
            None => {
                writeln!(
                    s,
                    "| {}{mark} | incomplete ({}/{} cells) | | | | {cost} | {paper} |",
                    r.label, e.cells_done, e.cells_total
                )
                .ok();
            }
        }
    }
    s.push('\n');
    if !short.is_empty() {
        writeln!(
            s,
            "† Far fewer epochs than the others (sized from the model's measured training speed so that the run fits its time; see the experiments file): {}. Its scores say how far the model gets in that many epochs, not how far it can get.\n",
            short.join("; ")
        )
        .ok();
    }
    s.push_str("Params, Flops and MemR+W follow torchstat 0.0.7's rules at batch 1 (Flops of Off-TANet: multiply-accumulates as torchstat counts them). The paper's MACNN figures were measured on a 2-channel variant (793.67M Flops); the code and this table use 3 channels. STSTNet is given u, v and strain at 28x28 (what its layers need; the published config passes 2 channels).\n\n");
    s
}

/// Pooled confusions at the honest epoch of all test samples and of those of SMIC, CASME II
/// and SAMM (by the dataset of each sample's id).
fn composite_confusions(
    preds: &[crate::metrics::FoldPredictions],
    records: &[crate::train::FoldRecord],
) -> [Confusion; 4] {
    let n = CLASS_NAMES.len();
    let mut out = [
        Confusion::new(n),
        Confusion::new(n),
        Confusion::new(n),
        Confusion::new(n),
    ];
    for (p, r) in preds.iter().zip(records) {
        for ((t, q), id) in p.truth.iter().zip(&p.pred).zip(&r.test_samples) {
            out[0].add(*t, *q);
            let k = match id.split('/').next() {
                Some("smic") => 1,
                Some("casme2") => 2,
                Some("samm") => 3,
                _ => continue,
            };
            out[k].add(*t, *q);
        }
    }
    out
}

/// Published MEGC 2019 composite results (UF1, UAR for Full, SMIC, CASME II, SAMM), with
/// their source. Transcribed from the papers' tables.
const MEGC_PUBLISHED: [(&str, [f64; 8], &str); 4] = [
    (
        "Off-ApexNet (published)",
        [0.7196, 0.7096, 0.6817, 0.6695, 0.8764, 0.8681, 0.5409, 0.5392],
        "See et al., MEGC 2019 - The Second Facial Micro-Expressions Grand Challenge (FG 2019), composite table (checked here only against its 2-decimal reprint, Guo et al., arXiv 1907.09160, Table X)",
    ),
    (
        "Dual-Inception (published)",
        [0.7322, 0.7278, 0.6645, 0.6726, 0.8621, 0.8560, 0.5868, 0.5663],
        "Zhou et al., Dual-Inception (FG 2019): Full UF1/UAR in its abstract; per database as in See et al., MEGC 2019 (FG 2019), checked against the 2-decimal reprint in arXiv 1907.09160, Table X",
    ),
    (
        "STSTNet (published)",
        [0.7353, 0.7605, 0.6801, 0.7013, 0.8382, 0.8686, 0.6588, 0.6810],
        "Liong et al., STSTNet, FG 2019 (arXiv 1902.03634: Full UF1/UAR and the UARs in its abstracts); all eight recomputed from the authors' prediction log (github.com/christy1206/STSTNet, STSTNet_logfile.txt)",
    ),
    (
        "HTNet (published)",
        [0.8603, 0.8475, 0.8049, 0.7905, 0.9532, 0.9516, 0.8131, 0.8124],
        "Wang et al., HTNet (arXiv 2307.14637), its composite table as reprinted in github.com/Arksuzuran/HypHTNet (README); the official README shows it as an image",
    ),
];

/// The MEGC 2019 composite table: UF1 and UAR on all folds' predictions pooled, for the
/// whole composite and restricted to each database (mean over the complete seeds), with the
/// published figures of other systems beside them.
fn composite_md(composites: &[(String, Vec<[Confusion; 4]>)], smic_apex: &str) -> String {
    let mut s = String::from("## MEGC 2019 composite (SMIC-HS + CASME II + SAMM)\n\n");
    let smic = match smic_apex {
        "spotted" => "SMIC's apex is spotted from the flow (the frame of largest mean optical strain from the onset)",
        _ => "SMIC's apex is its middle frame",
    };
    s.push_str(&format!("UF1 and UAR of all folds' test predictions pooled (honest protocol: the last epoch), for the composite (Full) and restricted to each database, mean over the complete seeds; {smic}. Published rows come from their papers (their protocols differ: several pick the epoch on the test subjects).\n\n"));
    s.push_str("| Model | Full UF1 | Full UAR | SMIC UF1 | SMIC UAR | CASME II UF1 | CASME II UAR | SAMM UF1 | SAMM UAR |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (name, seeds) in composites {
        if seeds.is_empty() {
            continue;
        }
        let mut v = [0.0f64; 8];
        for c in seeds {
            for (k, conf) in c.iter().enumerate() {
                let sc = conf.scores();
                v[2 * k] += sc.uf1 / seeds.len() as f64;
                v[2 * k + 1] += sc.uar / seeds.len() as f64;
            }
        }
        let cells: Vec<String> = v
            .iter()
            .enumerate()
            .map(|(i, x)| {
                if seeds[0][i / 2].total() == 0 {
                    "".into()
                } else {
                    format!("{x:.4}")
                }
            })
            .collect();
        writeln!(s, "| {name} | {} |", cells.join(" | ")).ok();
    }
    for (name, v, _) in &MEGC_PUBLISHED {
        let cells: Vec<String> = v.iter().map(|x| format!("{x:.4}")).collect();
        writeln!(s, "| {name} | {} |", cells.join(" | ")).ok();
    }
    s.push_str("\nSources: ");
    s.push_str(
        &MEGC_PUBLISHED
            .iter()
            .map(|(n, _, src)| format!("{n}: {src}"))
            .collect::<Vec<_>>()
            .join("; "),
    );
    s.push_str(".\n\n");
    s
}

/// The confusion matrices of one experiment's cells of one seed, in fold order, at the
/// honest epoch.
fn confusions(scores_records: &[crate::train::FoldRecord], epoch: usize) -> Result<Vec<Confusion>> {
    Ok(fold_predictions(scores_records, epoch)?
        .iter()
        .map(|f| Confusion::from_pairs(&f.truth, &f.pred, CLASS_NAMES.len()))
        .collect())
}

/// Writes the run's outputs from its finished cells (see the module documentation) and
/// returns what it found. Fig. 5 and Table 5 are made when a seed of `ta` is complete
/// (with its saved models); a failure there is reported in the report, not raised.
pub fn write_report(folder: &RunFolder, provenance: &Provenance) -> Result<ReportOutcome> {
    let settings = folder.settings()?;
    let (_samples, folds) = folder.samples()?;
    let invocations = folder.invocations()?;
    let expected = crate::run_dir::merge_grids(&invocations, &folder.dir)?;
    let run_dir = &folder.dir;
    let sch = &settings.schedule;

    // Experiments in table order, then the others.
    let mut order: Vec<usize> = Vec::new();
    for t in &settings.tables {
        for r in &t.rows {
            if let Some(i) = expected.iter().position(|(e, _)| e.name == r.experiment) {
                if !order.contains(&i) {
                    order.push(i);
                }
            }
        }
    }
    for i in 0..expected.len() {
        if !order.contains(&i) {
            order.push(i);
        }
    }

    // Per experiment and seed: the finished cells, scores and confusions.
    struct Loaded {
        summary: ExperimentSummary,
        cells: Vec<(u64, Vec<Confusion>)>,
        // Per complete seed: pooled confusions of all, SMIC, CASME II and SAMM test samples.
        composite: Vec<[Confusion; 4]>,
    }
    let mut loaded: Vec<Loaded> = Vec::new();
    let mut missing = Vec::new();
    let (mut cells_done, mut cells_total) = (0, 0);
    for &i in &order {
        let (spec, seeds) = &expected[i];
        let model = spec.model_spec(sch.dropout)?;
        let es = spec.schedule(sch);
        let honest = es.honest_epoch();
        let mut per_seed = Vec::new();
        let mut cells = Vec::new();
        let mut composite = Vec::new();
        let mut done = 0;
        for (k, &seed) in seeds.iter().enumerate() {
            let fp = fingerprint(spec, &es, seed, &settings.list_hash);
            let records = folder.load_cells(&spec.name, seed, &folds, &fp, false)?;
            done += records.len();
            for f in &folds {
                if !records.iter().any(|r| r.fold == f.number) {
                    missing.push(CellKey {
                        experiment: spec.name.clone(),
                        seed,
                        fold: f.number,
                    });
                }
            }
            if records.len() < folds.len() {
                continue;
            }
            let scores = evaluate_protocols(&records, honest, CLASS_NAMES.len())?;
            let name = if k == 0 {
                format!("{}.csv", spec.name)
            } else {
                format!("{}.seed-{seed}.csv", spec.name)
            };
            let preds = fold_predictions(&records, honest)?;
            write_atomic(
                &run_dir.join("predictions").join(name),
                format_predictions(&preds, &CLASS_NAMES).as_bytes(),
            )?;
            cells.push((seed, confusions(&records, honest)?));
            composite.push(composite_confusions(&preds, &records));
            per_seed.push(SeedScores { seed, scores });
        }
        cells_done += done;
        cells_total += seeds.len() * folds.len();
        loaded.push(Loaded {
            summary: ExperimentSummary {
                spec: spec.clone(),
                params: model.num_params()?,
                macs: model.flops()?,
                mem_rw_mib: Some(model.mem_rw_mib()?),
                schedule: es.clone(),
                seeds: seeds.clone(),
                cells_done: done,
                cells_total: seeds.len() * folds.len(),
                per_seed,
                aggregate: None,
            },
            cells,
            composite,
        });
    }

    // Aggregates over seeds, intervals and paired differences.
    let reference: Option<Vec<(u64, Vec<Confusion>)>> = loaded
        .iter()
        .find(|l| l.summary.spec.name == REFERENCE_EXPERIMENT)
        .map(|l| l.cells.clone());
    for l in &mut loaded {
        let s = &mut l.summary;
        if s.per_seed.is_empty() {
            continue;
        }
        let v = |f: &dyn Fn(&ProtocolScores) -> f64| -> MeanSd {
            MeanSd::of(&s.per_seed.iter().map(|x| f(&x.scores)).collect::<Vec<_>>())
        };
        let mut confusion = Confusion::new(CLASS_NAMES.len());
        for x in &s.per_seed {
            confusion.merge(&x.scores.confusion);
        }
        let first = &s.per_seed[0].scores;
        let curve = first
            .per_epoch
            .iter()
            .enumerate()
            .map(|(i, e)| CurvePoint {
                epoch: e.epoch,
                pooled_uar: v(&|p| p.per_epoch.get(i).map_or(f64::NAN, |x| x.pooled.uar)),
                fold_mean_uar: v(&|p| p.per_epoch.get(i).map_or(f64::NAN, |x| x.fold_mean.uar)),
            })
            .collect();
        let mine: Vec<Vec<Confusion>> = l.cells.iter().map(|(_, c)| c.clone()).collect();
        let (vs_reference, paired_seeds) = match &reference {
            Some(r) if s.spec.name != REFERENCE_EXPERIMENT => {
                let (a, b): (Vec<Vec<Confusion>>, Vec<Vec<Confusion>>) = l
                    .cells
                    .iter()
                    .filter_map(|(seed, c)| {
                        r.iter()
                            .find(|(rs, _)| rs == seed)
                            .map(|(_, rc)| (c.clone(), rc.clone()))
                    })
                    .unzip();
                if a.is_empty() {
                    (None, 0)
                } else {
                    (Some(paired_difference(&a, &b)), a.len())
                }
            }
            _ => (None, 0),
        };
        s.aggregate = Some(Aggregate {
            seeds: s.per_seed.iter().map(|x| x.seed).collect(),
            uar: v(&|p| p.honest_pooled.uar),
            uf1: v(&|p| p.honest_pooled.uf1),
            fold_mean_uar: v(&|p| p.honest_fold_mean.uar),
            fold_mean_uf1: v(&|p| p.honest_fold_mean.uf1),
            paper_uar: v(&|p| p.paper.uar),
            paper_uf1: v(&|p| p.paper.uf1),
            paper_epochs: s.per_seed.iter().map(|x| x.scores.paper_epoch).collect(),
            interval: bootstrap(&mine),
            vs_reference,
            paired_seeds,
            per_class: confusion.scores().per_class,
            confusion,
            curve,
        });
    }
    let composites: Vec<(String, Vec<[Confusion; 4]>)> = loaded
        .iter()
        .map(|l| (l.summary.spec.name.clone(), l.composite.clone()))
        .collect();
    let summaries: Vec<ExperimentSummary> = loaded.into_iter().map(|l| l.summary).collect();
    write_atomic(
        &run_dir.join("summary.csv"),
        summary_csv(&summaries, folds.len()).as_bytes(),
    )?;
    write_atomic(&run_dir.join("seeds.csv"), seeds_csv(&summaries).as_bytes())?;
    for s in &summaries {
        if let Some(a) = &s.aggregate {
            let honest = s.schedule.honest_epoch();
            let title = if a.seeds.len() > 1 {
                format!(
                    "{}: pooled confusion at epoch {honest}, summed over {} seeds",
                    s.spec.name,
                    a.seeds.len()
                )
            } else {
                format!("{}: pooled confusion at epoch {honest}", s.spec.name)
            };
            confusion_png(
                &run_dir
                    .join("confusion")
                    .join(format!("{}.png", s.spec.name)),
                &title,
                &a.confusion,
                &CLASS_NAMES,
            )?;
        }
    }
    let find = |n: &str| summaries.iter().find(|s| s.spec.name == n);
    let max_seeds = summaries.iter().map(|s| s.seeds.len()).max().unwrap_or(0);

    // Fig. 4, with error bars (one standard deviation over seeds) when there are seeds: the
    // Table 2 models (labelled as the paper does) when any of them is scored, else every
    // experiment.
    let chance = Some(1.0 / 3.0);
    let table2: Vec<(String, &ExperimentSummary)> = settings
        .tables
        .iter()
        .filter(|t| t.id == TABLE2)
        .flat_map(|t| t.rows.iter())
        .filter_map(|r| {
            find(&r.experiment)
                .filter(|s| s.aggregate.is_some())
                .map(|s| (r.label.clone(), s))
        })
        .collect();
    let plotted: Vec<(String, &ExperimentSummary)> = if table2.is_empty() {
        summaries.iter().map(|s| (s.spec.name.clone(), s)).collect()
    } else {
        table2
    };
    let pts = |f: fn(&Aggregate) -> MeanSd| -> Vec<Point> {
        plotted
            .iter()
            .filter_map(|(label, s)| {
                s.aggregate.as_ref().map(|a| Point {
                    label: label.clone(),
                    x: s.params as f64,
                    y: f(a).mean,
                    y_err: (a.seeds.len() > 1).then(|| f(a).sd),
                    highlight: s.spec.name == REFERENCE_EXPERIMENT,
                })
            })
            .collect()
    };
    let bars = if max_seeds > 1 {
        " ± sd over seeds"
    } else {
        ""
    };
    scatter_png(
        &run_dir.join("fig4_params_uar.png"),
        &format!("Fig. 4 (a): parameters vs UAR (honest, pooled{bars})"),
        "UAR",
        &pts(|a| a.uar),
        chance,
    )?;
    scatter_png(
        &run_dir.join("fig4_params_uf1.png"),
        &format!("Fig. 4 (b): parameters vs UF1 (honest, pooled{bars})"),
        "UF1",
        &pts(|a| a.uf1),
        None,
    )?;
    let series: Vec<Series> = summaries
        .iter()
        .filter_map(|s| {
            s.aggregate.as_ref().map(|a| Series {
                label: s.spec.name.clone(),
                points: a
                    .curve
                    .iter()
                    .map(|c| {
                        (
                            c.epoch as f64 + 1.0,
                            c.pooled_uar.mean,
                            (a.seeds.len() > 1).then_some(c.pooled_uar.sd),
                        )
                    })
                    .collect(),
            })
        })
        .collect();
    lines_png(
        &run_dir.join("learning_curves.png"),
        &format!("Learning curves: pooled UAR at the observation epochs{bars}"),
        "epochs trained",
        "pooled UAR",
        &series,
        chance,
    )?;

    // Fig. 5 and Table 5, on the first complete seed of Off-TANet.
    let attention: Option<std::result::Result<AttentionReport, String>> =
        find(REFERENCE_EXPERIMENT)
            .and_then(|s| s.aggregate.as_ref())
            .map(|a| {
                analyse_attention(run_dir, REFERENCE_EXPERIMENT, Some(a.seeds[0]), None)
                    .map_err(|e| e.to_string())
            });

    // REPORT.md
    let mut md = String::new();
    let data = if settings.data_kind == "synthetic" {
        format!(
            "the synthetic database at `{}`",
            settings.data_root.display()
        )
    } else {
        format!("the databases under `{}`", settings.data_root.display())
    };
    writeln!(md, "# Off-TANet ablations: run `{}`\n", settings.run).ok();
    writeln!(md, "Data: {data}, {} samples, {} LOSO folds (one per database and subject). Schedule `{}`: {} epochs, batch {}, Adam lr {} with x{} every {} epochs, observed every {} epochs and at the last.\n",
        settings.samples, settings.folds, sch.name, sch.epochs, sch.batch_size, sch.lr, sch.lr_decay, sch.lr_step, sch.eval_every).ok();
    let all_seeds = crate::run_dir::all_seeds(&expected);
    writeln!(
        md,
        "**What this report rests on:** {cells_done} of {cells_total} cells (experiment x seed x fold) finished: {} experiment(s), seed(s) {}, {} folds each. {}\n",
        expected.len(),
        all_seeds.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", "),
        folds.len(),
        if missing.is_empty() { "No cell is missing.".to_string() } else { format!("{} cell(s) missing (listed at the end); an experiment is scored on its complete seeds only.", missing.len()) }
    )
    .ok();
    md.push_str(&protocol_note(settings.data_kind == "synthetic"));
    writeln!(md, "Uncertainty: with several seeds, UAR and UF1 are the mean ± standard deviation over seeds of the pooled scores (training randomness: initial weights, batch order, dropout). The 95% intervals are bootstrap percentiles over subjects: {REPLICATES} replicates, each drawing as many folds as there are with replacement (the same draws for every experiment) and pooling every seed's drawn folds. ΔUAR and ΔUF1 are the paired differences to Off-TANet (`{REFERENCE_EXPERIMENT}`) on the same seeds and folds, with their bootstrap intervals; `*` marks an interval that excludes 0.").ok();
    if max_seeds <= 1 {
        md.push_str(" **This run has one seed: the spread over training runs cannot be estimated from it**, so no ± is given, and the intervals over subjects leave the training randomness out (measured on the default synthetic run, `ta`'s pooled UAR over seeds 0-4 had a standard deviation of 0.075). Run with `--seeds N` for it.\n\n");
    } else {
        md.push_str("\n\n");
    }
    md.push_str("## Tables\n\nUAR and UF1 in bold: honest protocol, pooled over folds at the last epoch.\n\n");
    for t in &settings.tables {
        if t.id == TABLE2 {
            md.push_str(&table2_md(t, &summaries));
            continue;
        }
        let rows: Vec<_> = t
            .rows
            .iter()
            .map(|r| {
                (
                    r.label.clone(),
                    find(&r.experiment),
                    r.paper_uar,
                    r.paper_uf1,
                )
            })
            .collect();
        md.push_str(&table_md(&t.title, &rows));
    }
    let in_tables: Vec<&str> = settings
        .tables
        .iter()
        .flat_map(|t| t.rows.iter().map(|r| r.experiment.as_str()))
        .collect();
    let others: Vec<_> = summaries
        .iter()
        .filter(|s| !in_tables.contains(&s.spec.name.as_str()))
        .map(|s| (s.spec.name.clone(), Some(s), None, None))
        .collect();
    if !others.is_empty() {
        md.push_str(&table_md("Other experiments", &others));
    }
    if max_seeds > 1 {
        md.push_str("Per seed (`seeds.csv`): pooled UAR / UF1.\n\n| Experiment | ");
        let seeds: Vec<u64> = all_seeds.iter().copied().collect();
        md.push_str(
            &seeds
                .iter()
                .map(|s| format!("seed {s}"))
                .collect::<Vec<_>>()
                .join(" | "),
        );
        writeln!(md, " |\n|---|{}", "---:|".repeat(seeds.len())).ok();
        for s in &summaries {
            let cells: Vec<String> = seeds
                .iter()
                .map(|seed| {
                    s.per_seed
                        .iter()
                        .find(|x| x.seed == *seed)
                        .map_or(String::new(), |x| {
                            format!(
                                "{:.4} / {:.4}",
                                x.scores.honest_pooled.uar, x.scores.honest_pooled.uf1
                            )
                        })
                })
                .collect();
            writeln!(md, "| {} | {} |", s.spec.name, cells.join(" | ")).ok();
        }
        md.push('\n');
    }
    if settings.benchmark == "megc2019" {
        md.push_str(&composite_md(&composites, &settings.smic_apex));
    }
    md.push_str("## Fig. 4\n\n![parameters vs UAR](fig4_params_uar.png)\n![parameters vs UF1](fig4_params_uf1.png)\n\n");
    md.push_str("## Fig. 5 and Table 5: attention maps and their sparseness\n\n");
    match &attention {
        Some(Ok(a)) => {
            let rel = a.figure.strip_prefix(run_dir).unwrap_or(&a.figure);
            writeln!(md, "Sample `{}` with the model of fold {} (trained without its subject), seed {}. `cargo xtask attention --run {} --sample ID` draws another sample.\n", a.sample, a.sample_fold, a.seed, settings.run).ok();
            writeln!(md, "![Fig. 5]({})\n", rel.display()).ok();
            md.push_str("Table 5: mean over each fold's test samples of Soft_0.01 (elements below 0.01) and Hoyer sparseness of the spatial-attention map (14x14 = 196 values) and of the self-attention softmax maps (28 channels x 196 values), final model of the fold.\n\n");
            md.push_str(&format_table5(a));
            md.push('\n');
        }
        Some(Err(e)) => writeln!(md, "Not made: {e}\n").unwrap_or(()),
        None => {
            md.push_str("Not made: no seed of the `ta` experiment is complete in this run.\n\n")
        }
    }
    md.push_str("## Confusion matrices (honest protocol: pooled, last epoch; rows true, columns predicted; summed over the seeds)\n\n");
    for s in &summaries {
        if let Some(a) = &s.aggregate {
            writeln!(
                md,
                "**{}** ([png](confusion/{}.png)); per-class recall / F1: {}\n",
                s.spec.name,
                s.spec.name,
                a.per_class
                    .iter()
                    .map(|c| format!("{} {:.3} / {:.3}", CLASS_NAMES[c.class], c.recall, c.f1))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
            .ok();
            md.push_str(
                "| true \\ predicted | negative | positive | surprise |\n|---|---:|---:|---:|\n",
            );
            for t in 0..a.confusion.n {
                writeln!(
                    md,
                    "| {} | {} |",
                    CLASS_NAMES[t],
                    (0..a.confusion.n)
                        .map(|q| a.confusion.get(t, q).to_string())
                        .collect::<Vec<_>>()
                        .join(" | ")
                )
                .ok();
            }
            md.push('\n');
        }
    }
    md.push_str("## Learning curves\n\n![learning curves](learning_curves.png)\n\nUAR at every observation epoch: pooled / mean per fold");
    md.push_str(if max_seeds > 1 {
        " (mean ± sd over seeds)"
    } else {
        ""
    });
    md.push_str(" (the paper protocol takes the epoch with the best mean per fold).\n\n");
    let done: Vec<&ExperimentSummary> =
        summaries.iter().filter(|s| s.aggregate.is_some()).collect();
    // Rows: every epoch any experiment observed (their schedules may differ); a cell is
    // empty where that experiment did not observe the epoch.
    let mut epochs: Vec<usize> = done
        .iter()
        .filter_map(|s| s.aggregate.as_ref())
        .flat_map(|a| a.curve.iter().map(|c| c.epoch))
        .collect();
    epochs.sort_unstable();
    epochs.dedup();
    if !done.is_empty() {
        writeln!(
            md,
            "| epoch | {} |",
            done.iter()
                .map(|s| s.spec.name.as_str())
                .collect::<Vec<_>>()
                .join(" | ")
        )
        .ok();
        writeln!(md, "|---:|{}", "---:|".repeat(done.len())).ok();
        for epoch in &epochs {
            let cells: Vec<String> = done
                .iter()
                .map(|s| {
                    let a = s.aggregate.as_ref().expect("filtered");
                    a.curve
                        .iter()
                        .find(|c| c.epoch == *epoch)
                        .map_or(String::new(), |c| {
                            if a.seeds.len() > 1 {
                                format!(
                                    "{:.3} ± {:.3} / {:.3} ± {:.3}",
                                    c.pooled_uar.mean,
                                    c.pooled_uar.sd,
                                    c.fold_mean_uar.mean,
                                    c.fold_mean_uar.sd
                                )
                            } else {
                                format!("{:.3} / {:.3}", c.pooled_uar.mean, c.fold_mean_uar.mean)
                            }
                        })
                })
                .collect();
            writeln!(md, "| {epoch} | {} |", cells.join(" | ")).ok();
        }
        md.push('\n');
    }
    if !missing.is_empty() {
        md.push_str("## Missing cells\n\nNot finished (or made with other settings): fill them with `cargo xtask ablation` (or its shards) on this run, then `cargo xtask report`.\n\n");
        let mut groups: Vec<((String, u64), Vec<usize>)> = Vec::new();
        for m in &missing {
            let k = (m.experiment.clone(), m.seed);
            match groups.iter_mut().find(|(g, _)| *g == k) {
                Some((_, v)) => v.push(m.fold),
                None => groups.push((k, vec![m.fold])),
            }
        }
        for ((e, seed), f) in groups {
            writeln!(
                md,
                "- `{e}` seed {seed}: {} of {} folds missing ({})",
                f.len(),
                folds.len(),
                f.iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
            .ok();
        }
        md.push('\n');
    }
    md.push_str("## Run\n\n");
    if let Some(z) = &settings.sizing {
        writeln!(md, "- Schedule sized to a {:.0} s budget from the measured training speed (samples/s per worker: {}); predicted training time {:.0} s.",
            z.budget_secs,
            z.speeds.iter().map(|s| format!("{} {:.1}", s.model, s.samples_per_sec)).collect::<Vec<_>>().join(", "),
            z.predicted_training_secs).ok();
    }
    for (i, inv) in invocations.iter().enumerate() {
        let what = inv
            .shard
            .as_ref()
            .map_or("all cells".to_string(), |s| format!("shard {s}"));
        let timing = inv.timing.as_ref().map_or("unfinished (running or killed)".to_string(), |t| {
            format!("{} cells trained, {} found finished, wall {:.0} s (features {:.0} s, training {:.0} s)", t.trained_cells, t.reused_cells, t.wall_secs, t.feature_secs, t.training_secs)
        });
        writeln!(md, "- Invocation {} ({what}, {} cells, host `{}`): {} mode, {} worker(s) x {} thread(s); {timing}.",
            i + 1, inv.shard_cells, inv.hostname, inv.plan.mode, inv.plan.workers, inv.plan.threads_per_cell).ok();
    }
    md.push_str("- Files: `summary.csv` (means over seeds, intervals, differences), `seeds.csv` (per seed), `predictions/<experiment>.csv` (`fold,truth,pred` at the last epoch, first seed; `<experiment>.seed-S.csv` for the others; `cargo xtask metrics --pred FILE` rescores them), `cells/<experiment>/seed-S/` (per-cell JSON and final weights), `invocations/` (one record per invocation), `manifest.json`.\n");
    write_atomic(&run_dir.join("REPORT.md"), md.as_bytes())?;

    // manifest.json: the settings and every invocation.
    let file_text = std::fs::read(&settings.experiments_file).unwrap_or_default();
    let manifest = Manifest {
        run: settings.run.clone(),
        commit: provenance.commit.clone(),
        command: provenance.command.clone(),
        settings: settings.clone(),
        experiments_file_hash: crate::io::fnv1a64_hex(&file_text),
        machine: Machine::detect(),
        invocations,
    };
    write_json(&run_dir.join("manifest.json"), &manifest)?;
    Ok(ReportOutcome {
        report: run_dir.join("REPORT.md"),
        summaries,
        missing,
        cells_done,
        cells_total,
    })
}

/// The report of an existing run folder (`cargo xtask report --run NAME`).
pub fn report_run(run_dir: &Path, provenance: &Provenance) -> Result<ReportOutcome> {
    write_report(&RunFolder::open(run_dir)?, provenance)
}
