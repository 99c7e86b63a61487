//! The dependency invariants of docs/ARCHITECTURE.md.

use std::process::Command;

/// The crates in the normal (non-dev, non-build) dependency tree of `package`.
fn normal_deps(package: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "-p",
            package,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn check(package: &str, forbidden: &[&str]) {
    let deps = normal_deps(package);
    assert!(
        deps.iter().any(|d| d == package),
        "{package} not in its own tree: {deps:?}"
    );
    for f in forbidden {
        assert!(
            !deps.iter().any(|d| d == f),
            "{package} must not depend on {f}; its tree: {deps:?}"
        );
    }
}

#[test]
fn flow_crate_is_free_of_opencv_and_candle() {
    check(
        "mer-flow",
        &[
            "opencv",
            "candle-core",
            "candle-nn",
            "mer-model",
            "mer-data",
        ],
    );
}

#[test]
fn model_crate_is_free_of_opencv_and_flow() {
    check("mer-model", &["opencv", "mer-flow", "mer-data"]);
}

#[test]
fn common_crate_is_at_the_bottom() {
    check(
        "mer-common",
        &[
            "opencv",
            "candle-core",
            "candle-nn",
            "mer-flow",
            "mer-model",
            "mer-data",
            "mer-eval",
            "rayon",
        ],
    );
}
