//! Ours vs OpenCV's DualTVL1 measured as whole processes, interleaved.
//!
//! `cargo run --release -p mer-flow --example bench_process -- [--rounds R] [--pairs N]`
//! (`--gen FILE [--pairs N]` only writes the input file, e.g. to run one side under a
//! profiler: `... --side ours --input FILE`).
//!
//! The driver (no `--side`) writes N different 112x112 face-like pairs (default 120:
//! `face_pair(112, 1000 + i, 0.2 + 0.25 * (i % 12))`, motions 0.2 to 2.95 px) to a
//! temporary file, then for R rounds (default 15, plus one discarded warm-up round) spawns
//! this same executable once per side, alternating the order
//! (ours, OpenCV, OpenCV, ours, ...), and times each child's whole life (spawn to exit,
//! wall clock). Each child (`--side ours|opencv --input FILE`) reads the file, converts
//! the pairs to its input type, computes every flow at one thread (a global rayon pool of
//! one thread for ours, `cv::setNumThreads(1)` for OpenCV), and prints a checksum of all
//! the flows' bits and the time of its flow loop alone.
//!
//! Input generation is therefore *excluded* from both sides (done once by the driver);
//! both children run the same binary (same start-up, same dynamic libraries) and do the
//! same work except the flow call. The driver checks that both sides print the same
//! checksum (bit-identical flows) in every run, and prints a Markdown table: the medians
//! of the whole-process wall times, their ratio, the median of the per-round ratios, the
//! medians of the children's CPU times (user + system, as each reports it from
//! `/proc/self/stat` at its end: less sensitive to other load on a shared machine), the
//! in-process flow-loop medians, and the load average before and after.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use mer_flow::{Flow, GrayImage, TvL1, TvL1Params, Workspace};
use std::process::Command;
use std::time::Instant;

const SIZE: usize = 112;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .map(|i| args.get(i + 1).expect(name).clone())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// FNV-1a over the bits of every value of every flow, in order (one 32-bit word per step).
fn fnv(hash: &mut u64, flow: &Flow) {
    for v in flow.data() {
        *hash ^= u64::from(v.to_bits());
        *hash = hash.wrapping_mul(0x100000001b3);
    }
}

/// This process's CPU time so far (user + system, from `/proc/self/stat`; 0 if unreadable).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn read_pairs(path: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let bytes = std::fs::read(path).expect("read pairs");
    let n = SIZE * SIZE;
    bytes
        .chunks_exact(2 * n)
        .map(|c| (c[..n].to_vec(), c[n..].to_vec()))
        .collect()
}

fn child(side: &str, input: &str) {
    let pairs = read_pairs(input);
    let params = TvL1Params::default();
    let mut hash = 0xcbf29ce484222325u64;
    let t;
    match side {
        "ours" => {
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build_global()
                .unwrap();
            let grays: Vec<(GrayImage, GrayImage)> = pairs
                .iter()
                .map(|(a, b)| (gray(SIZE, SIZE, a), gray(SIZE, SIZE, b)))
                .collect();
            let tv = TvL1::new(params).unwrap();
            let mut ws = Workspace::default();
            let mut out = Flow::zeros(1, 1).unwrap();
            let t0 = Instant::now();
            for (a, b) in &grays {
                tv.compute_into(&mut ws, a, b, None, &mut out).unwrap();
                fnv(&mut hash, &out);
            }
            t = t0.elapsed().as_secs_f64();
        }
        "opencv" => {
            opencv::core::set_num_threads(1).unwrap();
            let mats: Vec<_> = pairs
                .iter()
                .map(|(a, b)| (mat_u8(SIZE, SIZE, a), mat_u8(SIZE, SIZE, b)))
                .collect();
            let mut tv = opencv_tvl1(&params);
            let t0 = Instant::now();
            for (a, b) in &mats {
                let f = opencv_flow(&mut tv, SIZE, SIZE, a, b);
                fnv(&mut hash, &f);
            }
            t = t0.elapsed().as_secs_f64();
        }
        _ => panic!("--side ours|opencv"),
    }
    println!(
        "checksum={hash:016x} pairs={} flow_s={t:.6} cpu_s={:.2}",
        pairs.len(),
        cpu_seconds()
    );
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Runs one child; returns (whole-process seconds, checksum, in-process flow seconds, the
/// child's CPU seconds).
fn run(exe: &std::path::Path, side: &str, input: &str) -> (f64, String, f64, f64) {
    let t0 = Instant::now();
    let out = Command::new(exe)
        .args(["--side", side, "--input", input])
        .output()
        .expect("spawn");
    let wall = t0.elapsed().as_secs_f64();
    assert!(out.status.success(), "{side}: {out:?}");
    let s = String::from_utf8(out.stdout).unwrap();
    let field = |k: &str| {
        s.split_whitespace()
            .find_map(|f| f.strip_prefix(k))
            .unwrap_or_else(|| panic!("{side}: no {k} in {s}"))
            .to_string()
    };
    (
        wall,
        field("checksum="),
        field("flow_s=").parse().unwrap(),
        field("cpu_s=").parse().unwrap(),
    )
}

fn main() {
    if let Some(side) = arg("--side") {
        return child(&side, &arg("--input").expect("--input FILE"));
    }
    let rounds: usize = arg("--rounds").map_or(15, |s| s.parse().expect("--rounds"));
    let n: u32 = arg("--pairs").map_or(120, |s| s.parse().expect("--pairs"));
    let gen_only = arg("--gen");
    let path = gen_only.clone().map_or_else(
        || std::env::temp_dir().join(format!("mer-flow-bench-{}.bin", std::process::id())),
        std::path::PathBuf::from,
    );
    let mut bytes = Vec::with_capacity(n as usize * 2 * SIZE * SIZE);
    for i in 0..n {
        let (a, b, _) = face_pair(SIZE, 1000 + i, 0.2 + 0.25 * (i % 12) as f32);
        bytes.extend_from_slice(&a);
        bytes.extend_from_slice(&b);
    }
    std::fs::write(&path, &bytes).unwrap();
    if gen_only.is_some() {
        return; // only the input file (for profilers: `--side ours --input FILE`)
    }
    let input = path.to_str().unwrap().to_string();
    let exe = std::env::current_exe().unwrap();
    let load_before = loadavg();
    let (mut wo, mut wc, mut fo, mut fc, mut ratios) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut co, mut cc) = (Vec::new(), Vec::new());
    let mut checksum: Option<String> = None;
    for r in 0..=rounds {
        let order: [&str; 2] = if r % 2 == 0 {
            ["ours", "opencv"]
        } else {
            ["opencv", "ours"]
        };
        let mut got = [
            (0.0, String::new(), 0.0, 0.0),
            (0.0, String::new(), 0.0, 0.0),
        ];
        for side in order {
            let res = run(&exe, side, &input);
            got[usize::from(side == "opencv")] = res;
        }
        let [(w_o, c_o, f_o, u_o), (w_c, c_c, f_c, u_c)] = got;
        assert_eq!(c_o, c_c, "round {r}: flows differ (checksums)");
        if let Some(c) = &checksum {
            assert_eq!(c, &c_o, "round {r}: checksum changed between runs");
        }
        checksum = Some(c_o);
        eprintln!(
            "round {r}: ours {w_o:.3} s (flow {f_o:.3}, CPU {u_o:.2}), \
             OpenCV {w_c:.3} s (flow {f_c:.3}, CPU {u_c:.2}), ratio {:.2}",
            w_c / w_o
        );
        if r == 0 {
            continue; // warm-up
        }
        wo.push(w_o);
        wc.push(w_c);
        fo.push(f_o);
        fc.push(f_c);
        co.push(u_o);
        cc.push(u_c);
        ratios.push(w_c / w_o);
    }
    let _ = std::fs::remove_file(&path);
    let (mo, mc) = (median(&mut wo), median(&mut wc));
    let (mfo, mfc) = (median(&mut fo), median(&mut fc));
    let (mco, mcc) = (median(&mut co), median(&mut cc));
    println!(
        "| workload | rounds | ours, whole process (s) | OpenCV, whole process (s) | OpenCV / ours | median per-round ratio | CPU ours / OpenCV (s) | flow loops ours / OpenCV (s) | checksum (both) | load avg before / after |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {n} pairs 112x112, 1 thread | {rounds} | {mo:.3} | {mc:.3} | {:.2}x | {:.2}x | {mco:.2} / {mcc:.2} ({:.2}x) | {mfo:.3} / {mfc:.3} ({:.2}x) | {} | {load_before} / {} |",
        mc / mo,
        median(&mut ratios),
        mcc / mco,
        mfc / mfo,
        checksum.unwrap(),
        loadavg()
    );
}
