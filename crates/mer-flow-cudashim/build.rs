//! Compiles mer-flow's `.cu` kernels as C++ through `shim/shim.cpp`, with no
//! floating-point contraction (as NVRTC's `--fmad=false`).

fn main() {
    let cuda = "../mer-flow/cuda";
    println!("cargo:rerun-if-changed={cuda}");
    for entry in std::fs::read_dir(cuda).expect("crates/mer-flow/cuda exists") {
        println!(
            "cargo:rerun-if-changed={}",
            entry.expect("readable dir").path().display()
        );
    }
    println!("cargo:rerun-if-changed=shim/shim.cpp");
    println!("cargo:rerun-if-changed=shim/cuda_shim.h");
    cc::Build::new()
        .cpp(true)
        .file("shim/shim.cpp")
        .include("shim")
        .flag_if_supported("-std=c++17")
        .flag("-ffp-contract=off")
        .flag_if_supported("-fno-fast-math")
        .flag_if_supported("-Wno-unused-function")
        .opt_level(2)
        .compile("mer_flow_cudashim");
}
