//! The run's outputs: `summary.csv`, `predictions/<experiment>.csv` (honest epoch, the
//! `fold,truth,pred` format of `cargo xtask metrics`), `REPORT.md` (Tables 3 and 4 in the
//! paper's layout under both protocols, Fig. 4, Table 5 and Fig. 5, confusion matrices,
//! learning curves), the PNG figures and `manifest.json`.

use std::fmt::Write as _;
use std::path::Path;

use mer_data::SampleMeta;
use mer_model::candle_core::Device;
use mer_model::{OffTaNet, CLASS_NAMES};
use serde::{Deserialize, Serialize};

use crate::attention::{analyse_attention, format_table5, AttentionReport};
use crate::config::ExperimentSpec;
use crate::io::{read_json, write_atomic, write_json};
use crate::loso::Fold;
use crate::metrics::format_predictions;
use crate::plot::{confusion_png, scatter_png, Point};
use crate::protocol::{evaluate_protocols, fold_predictions, ProtocolScores};
use crate::runner::{fingerprint, load_fold_records, AblationOptions, RunState, Timing};
use crate::Result;

/// One experiment's line of the summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentSummary {
    /// The experiment's definition.
    pub spec: ExperimentSpec,
    /// Trainable parameters.
    pub params: usize,
    /// Multiply-accumulates per sample (torchstat's "Flops" count: the paper's 30.08M).
    pub macs: u64,
    /// Finished folds.
    pub folds_done: usize,
    /// All folds.
    pub folds_total: usize,
    /// Scores, once every fold is finished.
    pub scores: Option<ProtocolScores>,
}

/// The header of `summary.csv`.
pub const SUMMARY_HEADER: &str = "experiment,variant,input,params,macs,folds,honest_epoch,pooled_uar,pooled_uf1,fold_mean_uar,fold_mean_uf1,paper_epoch,paper_uar,paper_uf1";

fn summary_csv(rows: &[ExperimentSummary]) -> String {
    let mut s = format!("{SUMMARY_HEADER}\n");
    for r in rows {
        let e = &r.spec;
        match &r.scores {
            Some(p) => writeln!(
                s,
                "{},{},{},{},{},{},{},{:.6},{:.6},{:.6},{:.6},{},{:.6},{:.6}",
                e.name,
                e.variant,
                e.input,
                r.params,
                r.macs,
                r.folds_done,
                p.honest_epoch,
                p.honest_pooled.uar,
                p.honest_pooled.uf1,
                p.honest_fold_mean.uar,
                p.honest_fold_mean.uf1,
                p.paper_epoch,
                p.paper.uar,
                p.paper.uf1
            ),
            None => writeln!(
                s,
                "{},{},{},{},{},{},,,,,,,,",
                e.name, e.variant, e.input, r.params, r.macs, r.folds_done
            ),
        }
        .expect("writing to a String");
    }
    s
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
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

/// `manifest.json`: provenance of a run folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The run.
    pub run: String,
    /// Source commit of the last invocation.
    pub commit: String,
    /// Command line of the last invocation.
    pub command: String,
    /// The run's state (schedule, seed, data, experiments, parallel plan and sizing).
    pub config: RunState,
    /// Hash of the experiments file's text at the last invocation.
    pub experiments_file_hash: String,
    /// The machine of the last invocation.
    pub machine: Machine,
    /// Every invocation that trained or reported, oldest first.
    pub invocations: Vec<Invocation>,
}

/// One invocation of the runner on a run folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invocation {
    /// Source commit.
    pub commit: String,
    /// Host name.
    pub hostname: String,
    /// Timings.
    pub timing: Timing,
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

fn table_md(
    title: &str,
    rows: &[(String, Option<&ExperimentSummary>, Option<f64>, Option<f64>)],
) -> String {
    let mut s = format!("### {title}\n\n");
    s.push_str("| Model | UAR | UF1 | UAR (fold mean) | UF1 (fold mean) | UAR (paper protocol) | UF1 (paper protocol) | Params | MACs | Paper UAR | Paper UF1 |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let opt = |v: Option<f64>| v.map_or("".to_string(), |v| format!("{v:.4}"));
    for (label, e, pu, pf) in rows {
        match e {
            Some(e) => match &e.scores {
                Some(p) => writeln!(
                    s,
                    "| {label} | **{:.4}** | **{:.4}** | {:.4} | {:.4} | {:.4} | {:.4} (ep. {}) | {} | {:.2}M | {} | {} |",
                    p.honest_pooled.uar, p.honest_pooled.uf1, p.honest_fold_mean.uar, p.honest_fold_mean.uf1,
                    p.paper.uar, p.paper.uf1, p.paper_epoch, thousands(e.params as u64), e.macs as f64 / 1e6, opt(*pu), opt(*pf)
                ),
                None => writeln!(
                    s,
                    "| {label} | incomplete ({}/{} folds) | | | | | | {} | {:.2}M | {} | {} |",
                    e.folds_done, e.folds_total, thousands(e.params as u64), e.macs as f64 / 1e6, opt(*pu), opt(*pf)
                ),
            },
            None => writeln!(s, "| {label} | not run | | | | | | | | {} | {} |", opt(*pu), opt(*pf)),
        }
        .expect("writing to a String");
    }
    s.push('\n');
    s
}

/// Writes the run's outputs from the fold files on disk (for every experiment of the run)
/// and returns the summaries. Fig. 5 and Table 5 are made when the `ta` experiment is
/// complete (with its saved models); a failure there is reported in the report, not raised.
pub fn write_report(
    run_dir: &Path,
    state: &RunState,
    folds: &[Fold],
    _samples: &[SampleMeta],
    opts: &AblationOptions,
    timing: &Timing,
) -> Result<Vec<ExperimentSummary>> {
    // Experiments in table order, then the others.
    let mut order: Vec<String> = Vec::new();
    for t in &state.tables {
        for r in &t.rows {
            if state.experiments.contains_key(&r.experiment) && !order.contains(&r.experiment) {
                order.push(r.experiment.clone());
            }
        }
    }
    for k in state.experiments.keys() {
        if !order.contains(k) {
            order.push(k.clone());
        }
    }
    let sch = &state.schedule;
    let mut summaries = Vec::new();
    for name in &order {
        let spec = state.experiments[name].clone();
        let cfg = spec.model_config(sch.dropout)?;
        let net = OffTaNet::random(&cfg, &Device::Cpu)?;
        let fp = fingerprint(&spec, sch, state.seed, &state.list_hash);
        let records = load_fold_records(run_dir, name, folds, &fp, false)?;
        let scores = if records.len() == folds.len() {
            let p = evaluate_protocols(&records, sch.honest_epoch(), CLASS_NAMES.len())?;
            let preds = fold_predictions(&records, sch.honest_epoch())?;
            write_atomic(
                &run_dir.join("predictions").join(format!("{name}.csv")),
                format_predictions(&preds, &CLASS_NAMES).as_bytes(),
            )?;
            confusion_png(
                &run_dir.join("confusion").join(format!("{name}.png")),
                &format!("{name}: pooled confusion at epoch {}", p.honest_epoch),
                &p.confusion,
                &CLASS_NAMES,
            )?;
            Some(p)
        } else {
            None
        };
        summaries.push(ExperimentSummary {
            params: net.num_params(),
            macs: net.summary().total_flops(),
            folds_done: records.len(),
            folds_total: folds.len(),
            scores,
            spec,
        });
    }
    write_atomic(
        &run_dir.join("summary.csv"),
        summary_csv(&summaries).as_bytes(),
    )?;
    let find = |n: &str| summaries.iter().find(|s| s.spec.name == n);

    // Fig. 4.
    let chance = Some(1.0 / 3.0);
    let pts = |f: fn(&ProtocolScores) -> f64| -> Vec<Point> {
        summaries
            .iter()
            .filter_map(|s| {
                s.scores.as_ref().map(|p| Point {
                    label: s.spec.name.clone(),
                    x: s.params as f64,
                    y: f(p),
                    highlight: s.spec.name == "ta",
                })
            })
            .collect()
    };
    scatter_png(
        &run_dir.join("fig4_params_uar.png"),
        "Fig. 4 (a): parameters vs UAR (honest, pooled)",
        "UAR",
        &pts(|p| p.honest_pooled.uar),
        chance,
    )?;
    scatter_png(
        &run_dir.join("fig4_params_uf1.png"),
        "Fig. 4 (b): parameters vs UF1 (honest, pooled)",
        "UF1",
        &pts(|p| p.honest_pooled.uf1),
        None,
    )?;

    // Fig. 5 and Table 5.
    let attention: Option<std::result::Result<AttentionReport, String>> = match find("ta") {
        Some(s) if s.scores.is_some() => {
            Some(analyse_attention(run_dir, "ta", None).map_err(|e| e.to_string()))
        }
        _ => None,
    };

    // REPORT.md
    let mut md = String::new();
    let data = if state.data_kind == "synthetic" {
        format!("the synthetic database at `{}`", state.data_root.display())
    } else {
        format!("the databases under `{}`", state.data_root.display())
    };
    writeln!(md, "# Off-TANet ablations: run `{}`\n", state.run).ok();
    writeln!(md, "Data: {data}, {} samples, {} LOSO folds (one per database and subject). Schedule `{}`: {} epochs, batch {}, Adam lr {} with x{} every {} epochs, observed every {} epochs and at the last; seed {}.\n",
        state.samples, state.folds, sch.name, sch.epochs, sch.batch_size, sch.lr, sch.lr_decay, sch.lr_step, sch.eval_every, state.seed).ok();
    md.push_str(&protocol_note(state.data_kind == "synthetic"));
    md.push_str("## Tables 3 and 4\n\nUAR and UF1 in bold: honest protocol, pooled over folds at the last epoch.\n\n");
    for t in &state.tables {
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
    let in_tables: Vec<&str> = state
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
    md.push_str("## Fig. 4\n\n![parameters vs UAR](fig4_params_uar.png)\n![parameters vs UF1](fig4_params_uf1.png)\n\n");
    md.push_str("## Fig. 5 and Table 5: attention maps and their sparseness\n\n");
    match &attention {
        Some(Ok(a)) => {
            let rel = a.figure.strip_prefix(run_dir).unwrap_or(&a.figure);
            writeln!(md, "Sample `{}` with the model of fold {} (trained without its subject). `cargo xtask attention --run {} --sample ID` draws another sample.\n", a.sample, a.sample_fold, state.run).ok();
            writeln!(md, "![Fig. 5]({})\n", rel.display()).ok();
            md.push_str("Table 5: mean over each fold's test samples of Soft_0.01 (elements below 0.01) and Hoyer sparseness of the spatial-attention map (14x14 = 196 values) and of the self-attention softmax maps (28 channels x 196 values), final model of the fold.\n\n");
            md.push_str(&format_table5(a));
            md.push('\n');
        }
        Some(Err(e)) => writeln!(md, "Not made: {e}\n").unwrap_or(()),
        None => md.push_str("Not made: the `ta` experiment is not complete in this run.\n\n"),
    }
    md.push_str("## Confusion matrices (honest protocol: pooled, last epoch; rows true, columns predicted)\n\n");
    for s in &summaries {
        if let Some(p) = &s.scores {
            writeln!(
                md,
                "**{}** ([png](confusion/{}.png)); per-class recall / F1: {}\n",
                s.spec.name,
                s.spec.name,
                p.per_class
                    .iter()
                    .map(|c| format!("{} {:.3} / {:.3}", CLASS_NAMES[c.class], c.recall, c.f1))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
            .ok();
            md.push_str(
                "| true \\ predicted | negative | positive | surprise |\n|---|---:|---:|---:|\n",
            );
            for t in 0..p.confusion.n {
                writeln!(
                    md,
                    "| {} | {} |",
                    CLASS_NAMES[t],
                    (0..p.confusion.n)
                        .map(|q| p.confusion.get(t, q).to_string())
                        .collect::<Vec<_>>()
                        .join(" | ")
                )
                .ok();
            }
            md.push('\n');
        }
    }
    md.push_str("## Learning curves\n\nUAR at every observation epoch: pooled / mean per fold (the paper protocol takes the epoch with the best mean per fold).\n\n");
    let done: Vec<&ExperimentSummary> = summaries.iter().filter(|s| s.scores.is_some()).collect();
    if let Some(first) = done.first().and_then(|s| s.scores.as_ref()) {
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
        for (i, e) in first.per_epoch.iter().enumerate() {
            let cells: Vec<String> = done
                .iter()
                .map(|s| {
                    s.scores
                        .as_ref()
                        .and_then(|p| p.per_epoch.get(i))
                        .map_or(String::new(), |x| {
                            format!("{:.3} / {:.3}", x.pooled.uar, x.fold_mean.uar)
                        })
                })
                .collect();
            writeln!(md, "| {} | {} |", e.epoch, cells.join(" | ")).ok();
        }
        md.push('\n');
    }
    md.push_str("## Run\n\n");
    writeln!(
        md,
        "- Parallelism: {} mode, {} worker(s) x {} thread(s).",
        state.plan.mode, state.plan.workers, state.plan.threads_per_fold
    )
    .ok();
    if let (Some(b), Some(p)) = (state.plan.budget_secs, state.plan.predicted_training_secs) {
        writeln!(md, "- Schedule sized to a {b:.0} s budget from the measured training speed (samples/s per worker: {}); predicted training time {p:.0} s.",
            state.plan.speeds.iter().map(|s| format!("{} {:.1}", s.model, s.samples_per_sec)).collect::<Vec<_>>().join(", ")).ok();
    }
    if let (Some(f), Some(s)) = (state.plan.folds_throughput, state.plan.serial_throughput) {
        writeln!(md, "- Measured `ta` throughput: {f:.1} samples/s with one fold per core, {s:.1} samples/s with one fold on all cores.").ok();
    }
    writeln!(md, "- Wall time of the last invocation: {:.0} s (features {:.0} s, training {:.0} s; {} folds trained, {} reused). All invocations and the machine: `manifest.json`.",
        timing.wall_secs, timing.feature_secs, timing.training_secs, timing.trained_folds, timing.reused_folds).ok();
    md.push_str("- Files: `summary.csv`, `predictions/<experiment>.csv` (`fold,truth,pred` at the last epoch; `cargo xtask metrics --pred FILE` rescores them), `folds/<experiment>/` (per-fold JSON and final weights).\n");
    write_atomic(&run_dir.join("REPORT.md"), md.as_bytes())?;

    // manifest.json, with every invocation.
    let path = run_dir.join("manifest.json");
    let mut invocations = read_json::<Manifest>(&path)
        .map(|m| m.invocations)
        .unwrap_or_default();
    let machine = Machine::detect();
    invocations.push(Invocation {
        commit: opts.provenance.commit.clone(),
        hostname: machine.hostname.clone(),
        timing: timing.clone(),
    });
    let file_text = std::fs::read(&opts.experiments_file).unwrap_or_default();
    let manifest = Manifest {
        run: state.run.clone(),
        commit: opts.provenance.commit.clone(),
        command: opts.provenance.command.clone(),
        config: state.clone(),
        experiments_file_hash: crate::io::fnv1a64_hex(&file_text),
        machine,
        invocations,
    };
    write_json(&path, &manifest)?;
    Ok(summaries)
}
