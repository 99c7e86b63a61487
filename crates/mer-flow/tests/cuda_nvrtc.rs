//! Every kernel compiles with NVRTC (through cudarc, loaded at run time), each
//! `.cu` file alone and all together, with the GPU path's options. Needs the
//! NVRTC library, not a GPU: `pip install nvidia-cuda-nvrtc-cu12` and its
//! `<site-packages>/nvidia/cuda_nvrtc/lib` on `LD_LIBRARY_PATH` (or
//! `MER_FLOW_NVRTC=/path/to/libnvrtc.so.12`). Skips, saying why, when NVRTC is
//! absent, except with `CI=true`, where that is a failure.

use mer_flow::cuda::{compile_ptx, file_source, load_nvrtc, program_source, Kernel, SOURCES};

fn nvrtc_or_skip() -> bool {
    match load_nvrtc() {
        Ok(where_) => {
            println!("NVRTC: {where_}");
            true
        }
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true and NVRTC is missing: {e}")
        }
        Err(e) => {
            println!("SKIPPED: {e}");
            false
        }
    }
}

#[test]
fn every_kernel_file_compiles_with_nvrtc() {
    if !nvrtc_or_skip() {
        return;
    }
    for (name, _) in &SOURCES[1..] {
        let t = std::time::Instant::now();
        let ptx =
            compile_ptx(&file_source(name).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let entries: Vec<&str> = Kernel::ALL
            .iter()
            .filter(|k| k.file() == *name)
            .map(|k| k.name())
            .collect();
        assert!(
            !entries.is_empty(),
            "{name} defines no kernel of Kernel::ALL"
        );
        for e in &entries {
            assert!(
                ptx.contains(&format!(".entry {e}(")),
                "{name}: no entry {e} in the PTX"
            );
        }
        // No fused multiply-add may appear (--fmad=false), nor approximate division / square root.
        for bad in [
            "fma.rn.f32",
            "fma.rn.f64",
            "div.approx",
            "div.full",
            "sqrt.approx",
            ".ftz.",
        ] {
            assert!(!ptx.contains(bad), "{name}: PTX contains {bad}");
        }
        println!(
            "{name}: {entries:?} -> {} bytes of PTX in {:.0?}",
            ptx.len(),
            t.elapsed()
        );
    }
}

#[test]
fn the_whole_program_compiles_with_every_kernel() {
    if !nvrtc_or_skip() {
        return;
    }
    let ptx = compile_ptx(&program_source()).unwrap_or_else(|e| panic!("{e}"));
    for k in Kernel::ALL {
        assert!(
            ptx.contains(&format!(".entry {}(", k.name())),
            "no entry {}",
            k.name()
        );
    }
    println!(
        "all {} kernels: {} bytes of PTX",
        Kernel::ALL.len(),
        ptx.len()
    );
}

#[test]
fn compile_errors_are_reported_with_the_log() {
    if !nvrtc_or_skip() {
        return;
    }
    let e = compile_ptx("extern \"C\" __global__ void broken(float* x) { x[0] = undefined_name; }")
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("undefined_name"), "{msg}");
}
