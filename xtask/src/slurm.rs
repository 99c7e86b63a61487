//! `cargo xtask ablation ... --slurm`: the run as a Slurm job array. This process prepares
//! the run folder (data, features, settings, the grid), writes two sbatch scripts into
//! `<run>/slurm/` (an array over the shards; a report job after it) and submits them.
//! Slurm does the queueing, placement and limits; every array task is `cargo xtask
//! ablation` on the same settings, taking its shard from `SLURM_ARRAY_TASK_ID`.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use mer_eval::runner::{prepare, record_submission};
use mer_eval::{AblationOptions, DataSource, Parallelism};

use crate::eval::AblationArgs;

/// Single-quotes a word for a POSIX shell.
fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn abs(p: &Path) -> Result<String> {
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    };
    Ok(p.to_string_lossy().into_owned())
}

/// The array task's command line: the same run, its settings spelled out.
fn task_command(
    exe: &str,
    a: &AblationArgs,
    o: &AblationOptions,
    seeds: &[u64],
) -> Result<Vec<String>> {
    let mut v: Vec<String> = vec![exe.into(), "ablation".into()];
    let mut push = |k: &str, val: String| {
        v.push(k.into());
        v.push(val);
    };
    match &o.data {
        DataSource::Root(d) => push("--data", abs(d)?),
        DataSource::Synthetic(d) => push("--synth-dir", abs(d)?),
    }
    push("--config", abs(&o.experiments_file)?);
    push(
        "--benchmark",
        mer_eval::runner::benchmark_name(o.benchmark).into(),
    );
    push(
        "--smic-apex",
        match o.smic_apex {
            mer_data::megc::SmicApex::Middle => "middle",
            mer_data::megc::SmicApex::Spotted => "spotted",
        }
        .into(),
    );
    push("--schedule", o.schedule.clone());
    if let Some(e) = o.epochs {
        push("--epochs", e.to_string());
    }
    if let Some(b) = o.budget_secs {
        push("--budget", b.to_string());
    }
    push("--results", abs(&o.results_dir)?);
    push("--cache", abs(&o.cache_dir)?);
    push("--run", o.run_name.clone());
    if !o.only.is_empty() {
        push("--only", o.only.join(","));
    }
    push(
        "--seed-list",
        seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(","),
    );
    push(
        "--parallel",
        match o.parallelism {
            Parallelism::Auto => "auto",
            Parallelism::Folds => "folds",
            Parallelism::Serial => "serial",
        }
        .into(),
    );
    push("--threads", a.cpus_per_task.to_string());
    v.push("--no-progress".into());
    Ok(v)
}

fn sbatch(args: &[String]) -> Result<String> {
    let out = Command::new("sbatch")
        .args(args)
        .output()
        .context("running sbatch (is Slurm installed and SLURM_CONF set?)")?;
    if !out.status.success() {
        bail!(
            "sbatch {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // `--parsable` prints `ID` or `ID;CLUSTER`.
    let text = String::from_utf8_lossy(&out.stdout);
    let id = text.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        bail!("sbatch printed `{}`, expected a job id", text.trim());
    }
    Ok(id)
}

pub fn submit(a: &AblationArgs, opts: &AblationOptions) -> Result<()> {
    anyhow::ensure!(a.cpus_per_task >= 1, "--cpus-per-task must be at least 1");
    anyhow::ensure!(
        a.max_parallel != Some(0) && a.shards != Some(0),
        "--max-parallel and --shards must be at least 1"
    );
    if a.shard.is_some() {
        bail!("--shard and --slurm: the array tasks choose their shards");
    }
    if opts.budget_secs.is_some() {
        bail!("--budget sizes the epochs for the cores of one machine; a Slurm run needs fixed epochs (--epochs E or the schedule's)");
    }
    let p = prepare(opts)?;
    let cells = record_submission(&p, opts, "slurm-submit")?;
    let shards = a.shards.unwrap_or(cells.min(1000)).min(cells).max(1);
    let dir = p.folder.dir.join("slurm");
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| logs.display().to_string())?;
    let exe = std::env::current_exe().context("the path of this program")?;
    let exe = exe.to_string_lossy().into_owned();
    let cwd = std::env::current_dir()?.to_string_lossy().into_owned();
    // `#SBATCH` values are not shell words: refuse what they cannot carry, and escape
    // `%` (a file-name pattern in --output).
    for (what, v) in [
        ("working folder", &cwd),
        ("run folder", &abs(&p.folder.dir)?),
    ] {
        if v.chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\'')
        {
            bail!("{what} `{v}`: Slurm's #SBATCH lines cannot hold spaces or quotes; use a path without them");
        }
    }
    let pct = |s: String| s.replace('%', "%%");
    let name = format!("mer-{}", mer_common::names::file_safe(&p.settings.run));
    let mut head = vec![
        "#!/bin/bash".to_string(),
        format!("#SBATCH --job-name={name}"),
        format!("#SBATCH --chdir={cwd}"),
    ];
    if let Some(q) = &a.partition {
        head.push(format!("#SBATCH --partition={q}"));
    }
    let limit = a.max_parallel.map_or(String::new(), |k| format!("%{k}"));
    let mut array = head.clone();
    array.push(format!("#SBATCH --array=0-{}{limit}", shards - 1));
    array.push(format!("#SBATCH --cpus-per-task={}", a.cpus_per_task));
    if let Some(t) = &a.time {
        array.push(format!("#SBATCH --time={t}"));
    }
    array.push(format!(
        "#SBATCH --output={}/cell-%A_%a.out",
        pct(logs.display().to_string())
    ));
    array.push(format!(
        "# {cells} cells (experiment x seed x fold) in {shards} shards; each task takes its shard from SLURM_ARRAY_TASK_ID."
    ));
    array.push("set -euo pipefail".into());
    let cmd = task_command(&exe, a, opts, &p.seeds)?;
    array.push(format!(
        "exec {}",
        cmd.iter().map(|w| sh(w)).collect::<Vec<_>>().join(" ")
    ));
    let mut report = head;
    report.push("#SBATCH --cpus-per-task=1".into());
    report.push(format!(
        "#SBATCH --output={}/report-%j.out",
        pct(logs.display().to_string())
    ));
    report.push("set -euo pipefail".into());
    report.push(format!(
        "exec {} report --run {} --results {}",
        sh(&exe),
        sh(&p.settings.run),
        sh(&abs(&opts.results_dir)?)
    ));
    let array_path = dir.join("array.sbatch");
    let report_path = dir.join("report.sbatch");
    mer_eval::io::write_atomic(&array_path, format!("{}\n", array.join("\n")).as_bytes())?;
    mer_eval::io::write_atomic(&report_path, format!("{}\n", report.join("\n")).as_bytes())?;
    let array_args = vec!["--parsable".to_string(), array_path.display().to_string()];
    println!(
        "run {}: {cells} cells in {shards} array tasks of {} CPU(s)",
        p.folder.dir.display(),
        a.cpus_per_task
    );
    println!(
        "scripts: {} and {}",
        array_path.display(),
        report_path.display()
    );
    if a.dry_run {
        println!("dry run, not submitted; to submit:");
        println!("  ID=$(sbatch {})", array_args.join(" "));
        println!(
            "  sbatch --parsable --dependency=afterok:$ID {}",
            report_path.display()
        );
        return Ok(());
    }
    let array_id = sbatch(&array_args)?;
    let report_id = sbatch(&[
        "--parsable".into(),
        format!("--dependency=afterok:{array_id}"),
        report_path.display().to_string(),
    ])?;
    println!("submitted: array job {array_id} ({shards} tasks), report job {report_id} (after the array succeeds)");
    println!("follow:    squeue -j {array_id},{report_id}");
    println!("logs:      {}", logs.display());
    println!(
        "report:    {} (or `cargo xtask report --run {}` at any time, with the cells done so far)",
        p.folder.dir.join("REPORT.md").display(),
        p.settings.run
    );
    println!("array_job_id={array_id}");
    println!("report_job_id={report_id}");
    Ok(())
}
