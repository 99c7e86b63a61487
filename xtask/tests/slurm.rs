//! `cargo xtask ablation --slurm` on a real Slurm: this test starts a single-node cluster on
//! localhost (Debian's slurm-wlm and munge, installed by `scripts/test.sh`; see
//! `../shared/docs/slurm-notes.md`), submits a tiny two-seed run as a job array plus its
//! report job, waits for both, and checks that the report equals the single-process run's.
//! The daemons it started are stopped by their pids, also when the test fails. Where Slurm
//! is not installed or the test does not run as root, it says why and passes, except under
//! `CI=true`, where that is a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Says why the test cannot run: a skip, or a failure under CI.
fn unavailable(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("Slurm test cannot run under CI=true: {why}");
    }
    eprintln!("skipping the Slurm test: {why}");
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.is_file())
}

fn run(cmd: &mut Command) -> std::process::Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// The daemons this test started, stopped by pid when dropped (also on a panic).
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
    munged_pid: Option<PathBuf>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut pidfiles = vec![self.dir.join("slurmd.pid"), self.dir.join("slurmctld.pid")];
        pidfiles.extend(self.munged_pid.clone());
        for f in pidfiles {
            if let Some(pid) = std::fs::read_to_string(&f)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                let _ = Command::new("kill").arg(pid.to_string()).status();
                // Give it a moment, then make sure.
                for _ in 0..50 {
                    if !Path::new(&format!("/proc/{pid}")).exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                if Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                }
                eprintln!("stopped {} (pid {pid})", f.display());
            }
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn munge_works() -> bool {
    let Ok(mut m) = Command::new("munge")
        .arg("-n")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let out = m.stdout.take().unwrap();
    let un = Command::new("unmunge")
        .stdin(out)
        .stderr(Stdio::null())
        .output();
    let _ = m.wait();
    un.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("Success"))
}

/// Starts munge (unless one works already), slurmctld and slurmd on localhost.
fn start_cluster() -> Cluster {
    let dir = std::env::temp_dir().join(format!("mer-slurm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for d in ["state", "spool"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let mut cluster = Cluster {
        conf: dir.join("slurm.conf"),
        dir: dir.clone(),
        munged_pid: None,
    };
    if !munge_works() {
        for d in [
            "/etc/munge",
            "/var/log/munge",
            "/run/munge",
            "/var/lib/munge",
        ] {
            std::fs::create_dir_all(d).unwrap();
        }
        let key = Path::new("/etc/munge/munge.key");
        if !key.exists() {
            let mut bytes = vec![0u8; 1024];
            use std::io::Read;
            std::fs::File::open("/dev/urandom")
                .unwrap()
                .read_exact(&mut bytes)
                .unwrap();
            std::fs::write(key, bytes).unwrap();
        }
        for p in [
            "/etc/munge",
            "/var/log/munge",
            "/run/munge",
            "/var/lib/munge",
        ] {
            run(Command::new("chown").args(["-R", "munge:munge", p]));
        }
        run(Command::new("chmod").args(["400", "/etc/munge/munge.key"]));
        let out = run(Command::new(which("munged").unwrap()).arg("--force"));
        assert!(
            out.status.success(),
            "munged: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.munged_pid = Some(PathBuf::from("/run/munge/munged.pid"));
        let t0 = Instant::now();
        while !munge_works() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "munge does not work"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let d = dir.display();
    let conf = format!(
        "ClusterName=local
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldPort={}
SlurmdPort={}
NodeName=localhost CPUs={cpus} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
",
        free_port(),
        free_port()
    );
    std::fs::write(&cluster.conf, conf).unwrap();
    for daemon in ["slurmctld", "slurmd"] {
        let out = run(Command::new(which(daemon).unwrap())
            .arg("-f")
            .arg(&cluster.conf));
        assert!(
            out.status.success(),
            "{daemon}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let t0 = Instant::now();
    loop {
        let out = run(Command::new("sinfo")
            .args(["-h", "-o", "%t"])
            .env("SLURM_CONF", &cluster.conf));
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if state == "idle" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the node is `{state}` after 60 s; slurmctld.log:\n{}",
            std::fs::read_to_string(dir.join("slurmctld.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    cluster
}

#[test]
fn a_slurm_array_run_gives_the_report_of_one_process() {
    let missing: Vec<&str> = [
        "slurmctld",
        "slurmd",
        "sbatch",
        "squeue",
        "sinfo",
        "munged",
        "munge",
    ]
    .into_iter()
    .filter(|b| which(b).is_none())
    .collect();
    if !missing.is_empty() {
        return unavailable(&format!(
            "{} not installed (scripts/test.sh installs slurm-wlm and munge)",
            missing.join(", ")
        ));
    }
    let uid = run(Command::new("id").arg("-u"));
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return unavailable("a single-node Slurm with SlurmUser=root needs root");
    }
    let dir = setup();
    let grid = ["--only", "ta", "--seeds", "2"];
    let mut local = grid.to_vec();
    local.extend(["--threads", "1"]);
    ok(&ablation(dir, "local", &local), "single-process run");

    let cluster = start_cluster();
    let mut args = grid.to_vec();
    args.extend(["--slurm", "--cpus-per-task", "1", "--max-parallel", "2"]);
    let out = ok(
        &ablation_command(dir, "onslurm", &args)
            .env("SLURM_CONF", &cluster.conf)
            .output()
            .unwrap(),
        "ablation --slurm",
    );
    println!("$ cargo xtask ablation ... --slurm --cpus-per-task 1 --max-parallel 2\n{out}");
    let id = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
            .to_string()
    };
    let (array, report) = (id("array_job_id="), id("report_job_id="));
    let t0 = Instant::now();
    loop {
        let q = run(Command::new("squeue")
            .args(["-h", "-j", &format!("{array},{report}"), "-o", "%i %T"])
            .env("SLURM_CONF", &cluster.conf));
        let text = String::from_utf8_lossy(&q.stdout).trim().to_string();
        if text.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(900),
            "jobs still queued after 900 s:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    println!(
        "both jobs left the queue after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let run_dir = dir.join("results/onslurm");
    let logs = run_dir.join("slurm/logs");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in &names {
        println!(
            "--- {}\n{}",
            p.file_name().unwrap().to_string_lossy(),
            read(p)
        );
    }
    let cells = names
        .iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("cell-")
        })
        .count();
    assert_eq!(cells, 6, "one log per array task: {names:?}");
    // Each task ran its own shard, and the report job merged them.
    let mut shards: Vec<String> = names
        .iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("cell-")
        })
        .map(|p| {
            let log = read(p);
            let i = log
                .find("shard ")
                .unwrap_or_else(|| panic!("no shard in {log}"));
            log[i..].split(':').next().unwrap().to_string()
        })
        .collect();
    shards.sort();
    let want: Vec<String> = (1..=6).map(|i| format!("shard {i}/6")).collect();
    assert_eq!(shards, want);
    let report_log = names
        .iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("report-")
        })
        .expect("a report job log");
    assert!(read(report_log).contains("6 of 6 cells finished"));
    assert!(
        run_dir.join("REPORT.md").is_file(),
        "the report job did not write REPORT.md; logs: {names:?}"
    );
    same_results(dir, "local", "onslurm", &["ta", "ta.seed-2"]);
    let report = read(&run_dir.join("REPORT.md"));
    assert!(report.contains("6 of 6 cells"), "{report}");
    drop(cluster);
}
