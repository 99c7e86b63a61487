//! `cargo xtask ablation | report | metrics | attention` end to end on a tiny synthetic
//! database (3 subjects, one per database): the same code path as the main command, with a
//! tiny schedule from an experiments file written here; an interrupted run that resumes;
//! shards run at once into one run folder; a shard killed with SIGKILL.

mod common;

use std::path::{Path, PathBuf};

use common::*;

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
            ablation_command(dir, "sharded", &args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in shards {
        ok(&c.wait_with_output().unwrap(), "a shard");
    }
    let run = dir.join("results/sharded");
    assert!(!run.join("REPORT.md").exists(), "a shard wrote the report");
    assert_eq!(cell_files(&run).len(), 6);
    let out = ok(&xtask_report(dir, "sharded"), "report");
    assert!(out.contains("6 of 6 cells finished"), "{out}");
    same_results(dir, "one", "sharded", &["ta", "ta.seed-2"]);
    let report = read(&run.join("REPORT.md"));
    assert!(
        report.contains("seed(s) 1, 2") && report.contains("** ± "),
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
    let out = ok(&xtask_report(dir, "partial"), "report of a partial run");
    assert!(out.contains("2 of 6 cells finished"), "{out}");
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
    // Shard 1/2 (3 of the 6 cells), killed once its first cell is on disk.
    let shard = |i: &str| {
        let mut a = grid.to_vec();
        a.extend(["--shard", i]);
        a.into_iter().map(String::from).collect::<Vec<String>>()
    };
    let first = shard("1/2");
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    let mut child = ablation_command(dir, "killed", &first)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let run = dir.join("results/killed");
    let t0 = std::time::Instant::now();
    while cell_files(&run).is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the shard ended before a cell was seen"
        );
        assert!(t0.elapsed().as_secs() < 300, "no cell after 300 s");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = cell_files(&run);
    assert!(
        !before.is_empty() && before.len() < 3,
        "{} of the shard's 3 cells at the kill",
        before.len()
    );
    let out = ok(
        &ablation(dir, "killed", &first),
        "the shard rerun after the kill",
    );
    let trained = 3 - before.len();
    assert!(
        out.contains(&format!(
            "shard done ({trained} of its 3 cells trained, {} reused)",
            before.len()
        )),
        "{out}"
    );
    let second = shard("2/2");
    let second: Vec<&str> = second.iter().map(String::as_str).collect();
    ok(&ablation(dir, "killed", &second), "the other shard");
    let after = cell_files(&run);
    assert_eq!(after.len(), 6);
    for (p, t) in &before {
        assert!(
            after.contains(&(p.clone(), *t)),
            "{} was rewritten",
            p.display()
        );
    }
    ok(&xtask_report(dir, "killed"), "report");
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

/// `--slurm --dry-run` prepares the run folder and writes the two sbatch scripts without
/// submitting: an array over the cells with the options given, each task the same run with
/// its settings spelled out, and a report job.
#[test]
fn slurm_dry_run_writes_the_scripts() {
    let dir = setup();
    let out = ok(
        &ablation(
            dir,
            "dry",
            &[
                "--only",
                "ta",
                "--seeds",
                "2",
                "--slurm",
                "--dry-run",
                "--partition",
                "cpu",
                "--time",
                "01:00:00",
                "--cpus-per-task",
                "2",
                "--max-parallel",
                "3",
            ],
        ),
        "ablation --slurm --dry-run",
    );
    assert!(
        out.contains("6 cells in 6 array tasks") && out.contains("not submitted"),
        "{out}"
    );
    let run = dir.join("results/dry");
    let array = read(&run.join("slurm/array.sbatch"));
    for needle in [
        "#SBATCH --array=0-5%3",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --partition=cpu",
        "#SBATCH --time=01:00:00",
        "cell-%A_%a.out",
        "'ablation'",
        "'--seed-list' '1,2'",
        "'--threads' '2'",
        "'--run' 'dry'",
    ] {
        assert!(
            array.contains(needle),
            "array.sbatch lacks `{needle}`:\n{array}"
        );
    }
    let report = read(&run.join("slurm/report.sbatch"));
    assert!(
        report.contains(" report --run 'dry' --results "),
        "{report}"
    );
    // Prepared: settings and the grid are there, nothing trained.
    assert!(run.join("run.json").is_file());
    assert!(cell_files(&run).is_empty());
    // A budget cannot be split over a cluster.
    let bad = ablation(
        dir,
        "dry2",
        &["--only", "ta", "--slurm", "--dry-run", "--budget", "60"],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--budget"));
}

/// `--benchmark megc2019` on real-format data (the repository's SMIC, CASME II and SAMM
/// fixtures): the composite table with its per-database columns and the published rows.
#[test]
fn megc2019_benchmark_runs_on_the_fixture_releases() {
    let dir = setup();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/db");
    let p = |s: &str| dir.join(s).to_str().unwrap().to_string();
    let out = xtask(&[
        "ablation",
        "--data",
        fixtures.to_str().unwrap(),
        "--benchmark",
        "megc2019",
        "--config",
        &p("tiny.toml"),
        "--schedule",
        "tiny",
        "--results",
        &p("results"),
        "--cache",
        &p("cache-megc"),
        "--run",
        "megc",
        "--only",
        "ta",
        "--threads",
        "1",
        "--no-progress",
    ]);
    ok(&out, "ablation --benchmark megc2019");
    let report = read(&dir.join("results/megc/REPORT.md"));
    for needle in [
        "## MEGC 2019 composite",
        "| Full UF1 | Full UAR | SMIC UF1 |",
        "| ta | ",
        "STSTNet (published) | 0.7353 | 0.7605",
    ] {
        assert!(
            report.contains(needle),
            "REPORT.md lacks `{needle}`:\n{report}"
        );
    }
    let samples = read(&dir.join("results/megc/samples.csv"));
    for d in ["\nsmic,", "\nsamm,", "\ncasme2,"] {
        assert!(samples.contains(d), "{samples}");
    }
    assert!(!samples.contains("\ncasme1,"), "{samples}");
    let settings = read(&dir.join("results/megc/run.json"));
    assert!(
        settings.contains("\"benchmark\": \"megc2019\""),
        "{settings}"
    );
}

/// The five Table 2 baselines from the repository's experiments file, trained like any
/// experiment (one epoch, on the tiny database), with Off-TANet: Table 2 in the paper's
/// layout (sorted by UAR, Params / Flops / MemR+W, the paper's figures beside ours), Fig. 4
/// of the Table 2 models, and each baseline's saved fold model loadable by its name.
#[test]
fn table2_baselines_train_and_report() {
    let dir = setup();
    let p = |s: &str| dir.join(s).to_str().unwrap().to_string();
    let paper = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/paper.toml");
    let out = xtask(&[
        "ablation",
        "--data",
        &p("db"),
        "--config",
        paper.to_str().unwrap(),
        "--results",
        &p("results"),
        "--cache",
        &p("cache"),
        "--run",
        "table2",
        "--only",
        "ta,off-apexnet,ststnet,dual-inception,macnn,micro-attention",
        "--epochs",
        "1",
        "--no-progress",
    ]);
    ok(&out, "ablation of the Table 2 models");
    let run = dir.join("results/table2");
    let report = read(&run.join("REPORT.md"));
    let table = report
        .split("### Table 2.")
        .nth(1)
        .unwrap_or_else(|| panic!("no Table 2 in REPORT.md:\n{report}"));
    let table = table.split("\n\n").nth(1).unwrap();
    for needle in [
        "| Model | UAR | UF1 | UAR (paper protocol) | UF1 (paper protocol) | Params | Flops | MemR+W | Epochs | Paper UAR |",
        "| Off-ApexNet | ",
        "| 2,664,475 | 3.87M | 10.35MB | 1 | 0.5832 | 0.5650 | 2.66M | 3.87M | 10.35MB |",
        "| 162,051 | 526.98K | 0.76MB | 1 | 0.5584 |",
        "| 6,449,867 | 12.64M | 26.27MB | 1 |",
        "| 70,573,923 | 797.69M | 297.96MB | 1 | 0.6835 |",
        "| 53,384,195 | 1.0G | 237.97MB | 1 | 0.7086 |",
        "| Off-TANet (Ours) | ",
        "| 59,403 | 30.08M | 5.64MB | 1 | 0.7315 | 0.7242 | 59,403 | 30.08M | 5.64MB |",
    ] {
        assert!(table.contains(needle), "Table 2 lacks `{needle}`:\n{table}");
    }
    // Sorted by our UAR, highest first.
    let uars: Vec<f64> = table
        .lines()
        .skip(2)
        .map(|l| {
            l.split('|')
                .nth(2)
                .unwrap()
                .trim()
                .trim_matches('*')
                .parse::<f64>()
                .unwrap()
        })
        .collect();
    assert_eq!(uars.len(), 6, "{table}");
    assert!(uars.windows(2).all(|w| w[0] >= w[1]), "{uars:?}\n{table}");
    let summary = read(&run.join("summary.csv"));
    for row in [
        "\noff-apexnet,off-apexnet,flow-no-strain,2664475,",
        "\nststnet,ststnet,flow3,162051,",
        "\nmicro-attention,micro-attention,flow3,53384195,",
    ] {
        assert!(
            summary.contains(row),
            "summary.csv lacks `{row}`:\n{summary}"
        );
    }
    assert!(is_png(&run.join("fig4_params_uar.png")));
    // A baseline's fold model is a state dict `predict --model NAME` loads.
    let weights = std::fs::read_dir(run.join("cells/ststnet/seed-0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .unwrap();
    let x = mer_model::candle_core::Tensor::zeros(
        (2, 3, 28, 28),
        mer_model::candle_core::DType::F32,
        &mer_model::candle_core::Device::Cpu,
    )
    .unwrap();
    let features = dir.join("ststnet-input.npy");
    mer_model::npy::write_tensor(&features, &x).unwrap();
    let logits = dir.join("ststnet-logits.npy");
    let out = xtask(&[
        "predict",
        "--model",
        "ststnet",
        "--weights",
        weights.to_str().unwrap(),
        "--features",
        features.to_str().unwrap(),
        "--out",
        logits.to_str().unwrap(),
    ]);
    ok(&out, "predict --model ststnet --weights <cell>");
    let y = mer_model::npy::read_tensor(&logits, &mer_model::candle_core::Device::Cpu).unwrap();
    assert_eq!(y.dims(), &[2, 3]);
}

/// `predict --run`: a finished run's fold models as an ensemble (the mean of the members'
/// probabilities, checked against each member alone through `--weights`), then the run's
/// final model once `train --out results/RUN/final/ta.safetensors` has written one.
#[test]
fn predict_run_uses_the_fold_models_then_the_final_model() {
    let dir = setup();
    ok(
        &ablation(dir, "pr", &["--only", "ta"]),
        "ablation --only ta",
    );
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let clip =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/db/casme2/Cropped/sub01/EP02_01f");
    let (onset, apex) = (
        s(&clip.join("reg_img46.jpg")),
        s(&clip.join("reg_img59.jpg")),
    );
    let results = s(&dir.join("results"));
    let json = dir.join("pr.json");
    // `predict` of the fixture pair (frames that are face crops), with `args` before it.
    let predict_pair = |args: &[&str]| {
        let pair = ["--onset", &onset, "--apex", &apex, "--face", "none"];
        xtask(&[&["predict"], args, &pair[..]].concat())
    };
    let run_args = ["--run", "pr", "--results", &results];
    let predict_run = || {
        ok(
            &predict_pair(&[&run_args[..], &["--json", &s(&json)]].concat()),
            "predict --run",
        );
        serde_json::from_str::<serde_json::Value>(&read(&json)).unwrap()
    };
    let j = predict_run();
    assert!(
        j["model"]
            .as_str()
            .unwrap()
            .contains("ensemble of 3 fold model(s)"),
        "{j}"
    );
    let members: Vec<String> = j["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect();
    assert_eq!(members.len(), 3);
    let probs = |v: &serde_json::Value| -> Vec<f64> {
        ["negative", "positive", "surprise"]
            .iter()
            .map(|k| v["predictions"][0]["probabilities"][k].as_f64().unwrap())
            .collect()
    };
    let mut mean = [0f64; 3];
    for w in &members {
        let one = dir.join("one.json");
        ok(
            &predict_pair(&["--weights", w, "--json", &s(&one)]),
            "predict --weights (a member)",
        );
        let p = probs(&serde_json::from_str(&read(&one)).unwrap());
        for (m, v) in mean.iter_mut().zip(p) {
            *m += v / members.len() as f64;
        }
    }
    for (a, b) in probs(&j).iter().zip(mean) {
        assert!(
            (a - b).abs() < 1e-6,
            "ensemble {:?} vs mean of members {mean:?}",
            probs(&j)
        );
    }
    // An experiment the run does not have.
    let out = predict_pair(&[&run_args[..], &["--experiment", "bot"]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no experiment `bot`") && err.contains("ta"),
        "{err}"
    );

    let fin = dir.join("results/pr/final/ta.safetensors");
    ok(
        &train_ta(dir, &dir.join("cache"), 1, &fin),
        "train --out results/pr/final/ta.safetensors",
    );
    let j = predict_run();
    assert!(j["model"].as_str().unwrap().contains("final model"), "{j}");
    assert_eq!(j["weights"], serde_json::json!([s(&fin)]));
    // A final model whose record names another sample list: used, with a warning.
    let rec = fin.with_extension("json");
    let mut r: serde_json::Value = serde_json::from_str(&read(&rec)).unwrap();
    r["list_hash"] = serde_json::json!("0123456789abcdef");
    std::fs::write(&rec, r.to_string()).unwrap();
    let out = predict_pair(&run_args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("trained on another sample list"),
        "{err}"
    );
}
