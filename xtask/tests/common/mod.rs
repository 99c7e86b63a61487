//! Helpers shared by the integration tests of the evaluation commands: the `xtask` binary,
//! a tiny synthetic database and experiments file, and comparisons of run folders.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .unwrap()
}

pub fn ok(out: &Output, what: &str) -> String {
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "{what} failed:\nstdout:\n{so}\nstderr:\n{se}"
    );
    so.into_owned()
}

/// Two experiments of the ablation, two epochs, the reference's dropout 0.5 (its masks are
/// seeded: training is bit-for-bit reproducible, which the resume test needs).
pub const TINY: &str = r#"
seed = 1
[schedules.tiny]
epochs = 2
batch_size = 4
lr = 1e-3
lr_decay = 0.3
lr_step = 1
eval_every = 1
dropout = 0.5

[[experiments]]
name = "ta"
variant = "ta"
input = "flow3"

[[experiments]]
name = "res"
variant = "res"
input = "flow-no-strain"

[[tables]]
id = "table4"
title = "Table 4 (tiny)"
rows = [
    { experiment = "res", label = "No enhancement", paper_uar = 0.6804, paper_uf1 = 0.6745 },
    { experiment = "ta", label = "Off-TANet (Ours)", paper_uar = 0.7315, paper_uf1 = 0.7242 },
]
"#;

/// The tiny database and experiments file, made once for all tests of this file.
pub fn setup() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("xtask-eval-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("db");
        ok(
            &xtask(&[
                "synth",
                "--out",
                db.to_str().unwrap(),
                "--subjects",
                "3",
                "--samples-per-subject",
                "4",
                "--frames",
                "3",
                "--size",
                "64",
            ]),
            "synth",
        );
        std::fs::write(dir.join("tiny.toml"), TINY).unwrap();
        dir
    })
}

/// `xtask ablation` on the tiny database and schedule into `dir/results/run`.
pub fn ablation_command(dir: &Path, run: &str, extra: &[&str]) -> Command {
    let p = |s: &str| dir.join(s).to_str().unwrap().to_string();
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.args([
        "ablation",
        "--data",
        &p("db"),
        "--config",
        &p("tiny.toml"),
        "--schedule",
        "tiny",
        "--results",
        &p("results"),
        "--cache",
        &p("cache"),
        "--run",
        run,
        "--no-progress",
    ])
    .args(extra);
    c
}

/// `xtask ablation` on the tiny database and schedule, waited for.
pub fn ablation(dir: &Path, run: &str, extra: &[&str]) -> Output {
    ablation_command(dir, run, extra).output().unwrap()
}

/// `xtask train --experiment ta` on the tiny database with the paper's schedule for `epochs`
/// epochs (features cached in `cache`), writing `out` and its record; waited for.
pub fn train_ta(dir: &Path, cache: &Path, epochs: u32, out: &Path) -> Output {
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let paper = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/paper.toml");
    xtask(&[
        "train",
        "--experiment",
        "ta",
        "--data",
        &s(&dir.join("db")),
        "--config",
        &s(&paper),
        "--cache",
        &s(cache),
        "--epochs",
        &epochs.to_string(),
        "--out",
        &s(out),
        "--no-progress",
    ])
}

/// `xtask report` on `dir/results/run`, waited for.
pub fn xtask_report(dir: &Path, run: &str) -> Output {
    xtask(&[
        "report",
        "--results",
        dir.join("results").to_str().unwrap(),
        "--run",
        run,
    ])
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn is_png(p: &Path) -> bool {
    std::fs::read(p)
        .map(|b| b.starts_with(b"\x89PNG"))
        .unwrap_or(false)
}

/// The report files of two runs agree, but for the lines that say who trained what and
/// how fast, and the runs' names.
pub fn same_results(dir: &Path, a: &str, b: &str, experiments: &[&str]) {
    let strip = |s: String| {
        s.lines()
            .filter(|l| !l.starts_with("- Invocation"))
            .map(|l| l.replace(a, "RUN").replace(b, "RUN"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut files: Vec<String> = [
        "summary.csv",
        "seeds.csv",
        "REPORT.md",
        "attention/TABLE5.md",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    files.extend(experiments.iter().map(|e| format!("predictions/{e}.csv")));
    for f in files {
        assert_eq!(
            strip(read(&dir.join("results").join(a).join(&f))),
            strip(read(&dir.join("results").join(b).join(&f))),
            "{f} differs between {a} and {b}"
        );
    }
}

/// The finished cell files of a run, with their modification times.
pub fn cell_files(run: &Path) -> Vec<(PathBuf, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![run.join("cells")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "json")
                && !p.file_name().unwrap().to_string_lossy().starts_with('.')
            {
                out.push((
                    p.clone(),
                    std::fs::metadata(&p).unwrap().modified().unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}
