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
        "confusion/ta.png",
        "confusion/res.png",
    ] {
        assert!(is_png(&run.join(f)), "{f} is not a PNG");
    }
    // One JSON and one safetensors per fold and experiment; no subject on both sides.
    for exp in ["ta", "res"] {
        let d = run.join("folds").join(exp);
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
    for k in ["commit", "config", "machine", "invocations"] {
        assert!(!manifest[k].is_null(), "manifest lacks {k}");
    }
    assert_eq!(manifest["config"]["schedule"]["epochs"], 2);
    assert_eq!(manifest["config"]["plan"]["mode"], "folds");
    assert!(manifest["config"]["list_hash"].as_str().unwrap().len() == 16);

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
    stop.extend(["--stop-after-folds", "2"]);
    let out = ablation(dir, "resumed", &stop);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stopped after 2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let folds = dir.join("results/resumed/folds/ta");
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
    assert_eq!(manifest["invocations"][0]["timing"]["reused_folds"], 2);
    assert_eq!(manifest["invocations"][0]["timing"]["trained_folds"], 1);
    // Same results: summary, predictions and report (but its timing line and run name).
    let strip = |s: String| {
        s.lines()
            .filter(|l| !l.contains("Wall time"))
            .map(|l| l.replace("straight", "RUN").replace("resumed", "RUN"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for f in [
        "summary.csv",
        "predictions/ta.csv",
        "REPORT.md",
        "attention/TABLE5.md",
    ] {
        assert_eq!(
            strip(read(&dir.join("results/straight").join(f))),
            strip(read(&dir.join("results/resumed").join(f))),
            "{f} differs"
        );
    }
    // A rerun of a finished run trains nothing.
    let again = ok(&ablation(dir, "resumed", &common), "rerun");
    assert!(again.contains("0 folds trained, 3 reused"), "{again}");
    // A different schedule in the same run folder is refused.
    let clash = ablation(dir, "resumed", &["--only", "ta", "--epochs", "5"]);
    assert!(!clash.status.success());
    assert!(String::from_utf8_lossy(&clash.stderr).contains("it was run with 2 epochs"));
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
