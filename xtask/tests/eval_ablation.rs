//! `cargo xtask ablation | metrics | attention` end to end on a tiny synthetic database
//! (3 subjects, one per database): the same code path as the main command, with a tiny
//! schedule from an experiments file written here; then an interrupted run that resumes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output, what: &str) -> String {
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
const TINY: &str = r#"
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
fn setup() -> &'static PathBuf {
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

fn ablation(dir: &Path, run: &str, extra: &[&str]) -> Output {
    let p = |s: &str| dir.join(s).to_str().unwrap().to_string();
    let mut args: Vec<String> = [
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
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    xtask(&args)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn is_png(p: &Path) -> bool {
    std::fs::read(p)
        .map(|b| b.starts_with(b"\x89PNG"))
        .unwrap_or(false)
}

/// The whole pipeline: synthetic database -> index -> features -> LOSO training of two
/// experiments (folds in parallel) -> report, figures, manifest; then `metrics` on the
/// written predictions and `attention` on the saved models.
#[test]
fn ablation_end_to_end_on_a_tiny_database() {
    let dir = setup();
    let out = ok(
        &ablation(dir, "e2e", &["--threads", "2", "--parallel", "folds"]),
        "ablation",
    );
    assert!(out.contains("report:"), "{out}");
    let run = dir.join("results/e2e");
    for f in [
        "REPORT.md",
        "summary.csv",
        "manifest.json",
        "run.json",
        "samples.csv",
        "predictions/ta.csv",
        "predictions/res.csv",
    ] {
        assert!(run.join(f).is_file(), "missing {f}");
    }
    for f in [
        "fig4_params_uar.png",
        "fig4_params_uf1.png",
        "learning_curves.png",
        "confusion/ta.png",
        "confusion/res.png",
    ] {
        assert!(is_png(&run.join(f)), "{f} is not a PNG");
    }
    // One JSON and one safetensors per fold and experiment; no subject on both sides.
    for exp in ["ta", "res"] {
        let d = run.join("cells").join(exp).join("seed-1");
        let mut jsons: Vec<PathBuf> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        jsons.sort();
        assert_eq!(jsons.len(), 3, "{exp}: {jsons:?}");
        for j in &jsons {
            assert!(j.with_extension("safetensors").is_file());
            let v: serde_json::Value = serde_json::from_str(&read(j)).unwrap();
            let subject = format!(
                "{}/{}/",
                v["dataset"].as_str().unwrap(),
                v["subject"].as_str().unwrap()
            );
            let tests = v["test_samples"].as_array().unwrap();
            assert!(!tests.is_empty());
            assert!(
                tests
                    .iter()
                    .all(|t| t.as_str().unwrap().starts_with(&subject)),
                "{tests:?}"
            );
            assert_eq!(v["n_train"].as_u64().unwrap() as usize + tests.len(), 12);
            assert_eq!(v["observations"].as_array().unwrap().len(), 2);
        }
    }
    let report = read(&run.join("REPORT.md"));
    for needle in [
        "Table 4 (tiny)",
        "| No enhancement |",
        "| Off-TANet (Ours) |",
        "Synthetic data: these numbers are not the paper's",
        "Honest",
        "Table 5",
        "fig5_",
        "6 of 6 cells",
        "This run has one seed",
    ] {
        assert!(
            report.contains(needle),
            "REPORT.md lacks `{needle}`:\n{report}"
        );
    }
    let fig5: Vec<_> = std::fs::read_dir(run.join("attention"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| is_png(p))
        .collect();
    assert_eq!(fig5.len(), 1);
    let manifest: serde_json::Value =
        serde_json::from_str(&read(&run.join("manifest.json"))).unwrap();
    for k in ["commit", "settings", "machine", "invocations"] {
        assert!(!manifest[k].is_null(), "manifest lacks {k}");
    }
    assert_eq!(manifest["settings"]["schedule"]["epochs"], 2);
    assert_eq!(manifest["invocations"][0]["plan"]["mode"], "folds");
    assert!(manifest["settings"]["list_hash"].as_str().unwrap().len() == 16);

    // `metrics` on the written predictions gives the summary's pooled and fold-mean scores.
    let summary = read(&run.join("summary.csv"));
    let ta: Vec<&str> = summary
        .lines()
        .find(|l| l.starts_with("ta,"))
        .unwrap()
        .split(',')
        .collect();
    let m_out = dir.join("m.json");
    let json = ok(
        &xtask(&[
            "metrics",
            "--pred",
            run.join("predictions/ta.csv").to_str().unwrap(),
            "--out",
            m_out.to_str().unwrap(),
        ]),
        "metrics",
    );
    let m: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        m,
        serde_json::from_str::<serde_json::Value>(&read(&m_out)).unwrap()
    );
    let close = |a: &serde_json::Value, b: &str| {
        (a.as_f64().unwrap() - b.parse::<f64>().unwrap()).abs() < 1e-6
    };
    assert!(
        close(&m["pooled"]["uar"], ta[7]) && close(&m["pooled"]["uf1"], ta[8]),
        "{m} vs {ta:?}"
    );
    assert!(
        close(&m["per_fold_mean"]["uar"], ta[9]) && close(&m["per_fold_mean"]["uf1"], ta[10]),
        "{m} vs {ta:?}"
    );
    assert_eq!(m["folds"].as_array().unwrap().len(), 3);
    assert_eq!(m["folds"][0]["fold"], 1);

    // `attention` reloads the saved models.
    let att = ok(
        &xtask(&[
            "attention",
            "--results",
            dir.join("results").to_str().unwrap(),
            "--run",
            "e2e",
        ]),
        "attention",
    );
    assert!(att.contains("Table 5") && att.contains("| mean |"), "{att}");
    let bad = xtask(&[
        "attention",
        "--results",
        dir.join("results").to_str().unwrap(),
        "--run",
        "e2e",
        "--experiment",
        "res",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no spatial and self-attention"));
}

/// Interrupt a run after two folds, rerun it: it resumes (skipping the finished folds) and
/// ends with the same results as a run that was never interrupted.
#[test]
fn interrupted_run_resumes_to_the_same_report() {
    let dir = setup();
    let common = ["--only", "ta", "--threads", "1"];
    ok(&ablation(dir, "straight", &common), "uninterrupted run");
    let mut stop = common.to_vec();
    stop.extend(["--stop-after-cells", "2"]);
    let out = ablation(dir, "resumed", &stop);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stopped after 2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let folds = dir.join("results/resumed/cells/ta/seed-1");
    let count = |ext: &str| {
        std::fs::read_dir(&folds)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|e| e == ext)
            })
            .count()
    };
    assert_eq!((count("json"), count("safetensors")), (2, 2));
    assert!(!dir.join("results/resumed/REPORT.md").exists());
    let before: Vec<_> = std::fs::read_dir(&folds)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.clone(),
                std::fs::metadata(&p).unwrap().modified().unwrap(),
            )
        })
        .collect();
    ok(&ablation(dir, "resumed", &common), "resumed run");
    // The finished folds were not retrained.
    for (p, t) in before {
        assert_eq!(
            std::fs::metadata(&p).unwrap().modified().unwrap(),
            t,
            "{} was rewritten",
            p.display()
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&read(&dir.join("results/resumed/manifest.json"))).unwrap();
    // The stopped invocation and the resumed one.
    let inv = &manifest["invocations"];
    assert_eq!(inv[0]["timing"]["trained_cells"], 2);
    assert_eq!(inv[1]["timing"]["reused_cells"], 2);
    assert_eq!(inv[1]["timing"]["trained_cells"], 1);
    // Same results: summary, predictions and report (but the invocation lines and run name).
    same_results(dir, "straight", "resumed", &["ta"]);
    // A rerun of a finished run trains nothing.
    let again = ok(&ablation(dir, "resumed", &common), "rerun");
    assert!(again.contains("0 cells trained, 3 reused"), "{again}");
    // A different schedule in the same run folder is refused, naming the setting.
    let clash = ablation(dir, "resumed", &["--only", "ta", "--epochs", "5"]);
    assert!(!clash.status.success());
    let err = String::from_utf8_lossy(&clash.stderr);
    assert!(
        err.contains("setting `epochs` differs: the run folder has 2, this invocation 5"),
        "{err}"
    );
}

/// The report files of two runs agree, but for the lines that say who trained what and
/// how fast, and the runs' names.
fn same_results(dir: &Path, a: &str, b: &str, experiments: &[&str]) {
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
fn cell_files(run: &Path) -> Vec<(PathBuf, std::time::SystemTime)> {
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

/// Two seeds of `ta` (6 cells) in one process; the same grid as three shards running at
/// once into one run folder, then `report`: the same report, number for number. A shard
/// with a changed setting or another grid is refused, naming what differs.
#[test]
fn concurrent_shards_give_the_report_of_one_process() {
    let dir = setup();
    let grid = ["--only", "ta", "--seeds", "2", "--threads", "1"];
    ok(&ablation(dir, "one", &grid), "single-process run");
    let shards: Vec<_> = (1..=3)
        .map(|i| {
            let mut args = grid.to_vec();
            let s = format!("{i}/3");
            args.extend(["--shard", &s]);
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
                "sharded",
                "--no-progress",
            ]);
            c.args(&args);
            c.spawn().unwrap()
        })
        .collect();
    for mut c in shards {
        assert!(c.wait().unwrap().success(), "a shard failed");
    }
    let run = dir.join("results/sharded");
    assert!(!run.join("REPORT.md").exists(), "a shard wrote the report");
    assert_eq!(cell_files(&run).len(), 6);
    let out = ok(
        &xtask(&[
            "report",
            "--results",
            dir.join("results").to_str().unwrap(),
            "--run",
            "sharded",
        ]),
        "report",
    );
    assert!(out.contains("6 of 6 cells finished"), "{out}");
    same_results(dir, "one", "sharded", &["ta", "ta.seed-2"]);
    let report = read(&run.join("REPORT.md"));
    assert!(
        report.contains("seed(s) 1, 2") && report.contains("± "),
        "{report}"
    );
    assert!(report.contains("- Invocation 3 (shard"), "{report}");

    // A shard with another epoch count, or another grid, is refused.
    let clash = ablation(
        dir,
        "sharded",
        &[
            "--only", "ta", "--seeds", "2", "--shard", "1/3", "--epochs", "3",
        ],
    );
    assert!(!clash.status.success());
    let err = String::from_utf8_lossy(&clash.stderr);
    assert!(err.contains("setting `epochs` differs"), "{err}");
    let clash = ablation(
        dir,
        "sharded",
        &["--only", "ta", "--seeds", "3", "--shard", "1/3"],
    );
    assert!(!clash.status.success());
    let err = String::from_utf8_lossy(&clash.stderr);
    assert!(err.contains("setting `grid` differs"), "{err}");

    // The cells a run lacks are listed.
    let mut part = grid.to_vec();
    part.extend(["--shard", "2/3"]);
    ok(&ablation(dir, "partial", &part), "one shard");
    let out = ok(
        &xtask(&[
            "report",
            "--results",
            dir.join("results").to_str().unwrap(),
            "--run",
            "partial",
        ]),
        "report of a partial run",
    );
    assert!(out.contains("of 6 cells finished"), "{out}");
    let report = read(&dir.join("results/partial/REPORT.md"));
    assert!(
        report.contains("## Missing cells") && report.contains("folds missing"),
        "{report}"
    );
}

/// A shard killed with SIGKILL in the middle of its cells, then rerun: the cells it had
/// finished are kept as they were (not retrained), it trains only the rest, and the run
/// ends with the report of an uninterrupted run.
#[cfg(unix)]
#[test]
fn a_killed_shard_loses_only_its_cell_in_progress() {
    let dir = setup();
    let grid = [
        "--only",
        "ta",
        "--seeds",
        "2",
        "--threads",
        "1",
        "--parallel",
        "serial",
    ];
    ok(&ablation(dir, "unkilled", &grid), "uninterrupted run");
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
        "killed",
        "--no-progress",
    ])
    .args(grid)
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    let mut child = c.spawn().unwrap();
    let run = dir.join("results/killed");
    let t0 = std::time::Instant::now();
    while cell_files(&run).is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before a cell was seen"
        );
        assert!(t0.elapsed().as_secs() < 300, "no cell after 300 s");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = cell_files(&run);
    assert!(
        !before.is_empty() && before.len() < 6,
        "{} cells at the kill",
        before.len()
    );
    let out = ok(&ablation(dir, "killed", &grid), "rerun after the kill");
    let trained = 6 - before.len();
    assert!(
        out.contains(&format!(
            "({trained} cells trained, {} reused)",
            before.len()
        )),
        "{out}"
    );
    let after = cell_files(&run);
    assert_eq!(after.len(), 6);
    for (p, t) in &before {
        assert!(
            after.contains(&(p.clone(), *t)),
            "{} was rewritten",
            p.display()
        );
    }
    same_results(dir, "unkilled", "killed", &["ta", "ta.seed-2"]);
    // The killed invocation's record stays, marked unfinished.
    let report = read(&run.join("REPORT.md"));
    assert!(
        report.contains("unfinished (running or killed)"),
        "{report}"
    );
}

#[test]
fn metrics_command_rejects_bad_files() {
    let dir = std::env::temp_dir().join(format!("xtask-eval-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("bad.csv");
    std::fs::write(&p, "fold,truth\n1,negative\n").unwrap();
    let out = xtask(&["metrics", "--pred", p.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad.csv, line 1: header"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
