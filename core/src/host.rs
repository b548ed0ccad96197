//! The machine a run trains on: its provenance (what recorded it, on what hardware, from which
//! commit of the experiments folder), and the process's use of it while training (CPU, memory,
//! threads, GPU), sampled between batches on the run's own thread.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What a run records about where it ran (`runs.provenance`, JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Provenance {
    /// This program's version.
    pub shiftadd: String,
    /// The libtorch it was built against.
    pub libtorch: String,
    /// The experiments folder whose commit is recorded.
    pub experiments: Option<String>,
    /// `git rev-parse HEAD` there (`None`: not in a repository, or no git).
    pub git_commit: Option<String>,
    /// Whether the experiments folder has changes not committed (tracked or new files).
    pub git_dirty: Option<bool>,
    pub cpu: String,
    /// Logical cores.
    pub cores: usize,
    /// The GPUs NVML lists (none without an NVIDIA driver).
    pub gpus: Vec<String>,
    pub host: String,
    pub os: String,
}

impl Provenance {
    /// The short form Monitor shows: "shiftadd 0.1.0 · libtorch 2.13.0 · abc1234 (dirty) · …".
    pub fn summary(&self) -> String {
        let git = match (&self.git_commit, self.git_dirty) {
            (Some(c), dirty) => format!(
                "commit {}{}",
                &c[..c.len().min(10)],
                if dirty == Some(true) { " (dirty)" } else { "" }
            ),
            (None, _) => "no git commit".into(),
        };
        let gpu = if self.gpus.is_empty() {
            "no GPU".to_owned()
        } else {
            self.gpus.join(", ")
        };
        format!(
            "shiftadd {} · libtorch {} · {git} · {} ({} cores) · {gpu} · {}",
            self.shiftadd, self.libtorch, self.cpu, self.cores, self.host
        )
    }
}

static EXPERIMENTS: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Name the experiments folder whose git commit new runs record (the CLI: the config's folder;
/// the app: its experiments folder). Until set, the working directory's `experiments/` (or the
/// working directory).
pub fn set_experiments_dir(dir: &Path) {
    if let Ok(mut d) = EXPERIMENTS.lock() {
        *d = Some(dir.to_path_buf());
    }
}

fn experiments_dir() -> PathBuf {
    let set = EXPERIMENTS.lock().ok().and_then(|d| d.clone());
    set.unwrap_or_else(|| {
        let e = PathBuf::from("experiments");
        if e.is_dir() { e } else { PathBuf::from(".") }
    })
}

/// What does not change while the process lives: versions, CPU, GPUs, host.
fn machine() -> &'static Provenance {
    static M: OnceLock<Provenance> = OnceLock::new();
    M.get_or_init(|| {
        let cpu = sysinfo::System::new_with_specifics(
            sysinfo::RefreshKind::nothing().with_cpu(sysinfo::CpuRefreshKind::nothing()),
        )
        .ok()
        .and_then(|s| s.cpus().first().map(|c| c.brand().trim().to_owned()))
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "unknown CPU".into());
        Provenance {
            shiftadd: env!("CARGO_PKG_VERSION").into(),
            libtorch: env!("SHIFTADD_LIBTORCH_VERSION").into(),
            cpu,
            cores: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            gpus: gpu_names(),
            host: crate::store::hostname(),
            os: std::env::consts::OS.into(),
            ..Provenance::default()
        }
    })
}

fn gpu_names() -> Vec<String> {
    let Some(nvml) = nvml() else {
        return Vec::new();
    };
    let n = nvml.device_count().unwrap_or(0);
    (0..n)
        .filter_map(|i| nvml.device_by_index(i).ok()?.name().ok())
        .collect()
}

/// NVML, loaded once (`None` without an NVIDIA driver).
fn nvml() -> Option<&'static nvml_wrapper::Nvml> {
    static N: OnceLock<Option<nvml_wrapper::Nvml>> = OnceLock::new();
    N.get_or_init(|| nvml_wrapper::Nvml::init().ok()).as_ref()
}

/// `git` in `dir`: trimmed stdout of a successful command. The repository is not ours to trust:
/// its config could name a program for `git status` to run (`core.fsmonitor`) or hooks, so both
/// are switched off, and no optional lock is taken. (Clean filters its `.gitattributes` assign
/// can still run on a modified file; reading whether the tree is dirty needs them.)
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "core.fsmonitor=false",
            "-c",
            "core.hooksPath=/dev/null",
        ])
        .env("GIT_OPTIONAL_LOCKS", "0")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The provenance of a run created now (the git state is read each time: a commit made while
/// the app is open shows in the next run).
pub fn provenance() -> Provenance {
    let dir = experiments_dir();
    let commit = git(&dir, &["rev-parse", "HEAD"]);
    let dirty = commit
        .as_ref()
        .and_then(|_| git(&dir, &["status", "--porcelain", "--", "."]))
        .map(|s| !s.is_empty());
    Provenance {
        experiments: Some(
            std::fs::canonicalize(&dir)
                .unwrap_or(dir)
                .display()
                .to_string(),
        ),
        git_commit: commit,
        git_dirty: dirty,
        ..machine().clone()
    }
}

/// [`provenance`] as the JSON a run row stores.
pub fn provenance_json() -> String {
    serde_json::to_string(&provenance()).unwrap_or_default()
}

/// Metric keys of the system samples.
pub mod keys {
    /// The process's CPU use, % of one core (two busy cores: 200).
    pub const CPU_PCT: &str = "sys/cpu_pct";
    /// Resident memory of the process, MiB.
    pub const RSS_MB: &str = "sys/rss_mb";
    pub const THREADS: &str = "sys/threads";
    /// The run's GPU (CUDA runs): utilisation % and memory used, MiB.
    pub const GPU_UTIL_PCT: &str = "sys/gpu_util_pct";
    pub const GPU_MEM_MB: &str = "sys/gpu_mem_mb";
}

/// Samples the process every `every` (and whenever asked at an epoch end). Figures are the
/// process's: runs training in parallel in one process see the same numbers.
pub struct SysSampler {
    sys: Option<sysinfo::System>,
    pid: Option<sysinfo::Pid>,
    every: Duration,
    last: Instant,
    gpu: Option<u32>,
}

/// How often a training run samples its process.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

impl SysSampler {
    /// `gpu`: the CUDA device index the run trains on.
    pub fn new(every: Duration, gpu: Option<u32>) -> Self {
        let mut s = Self {
            sys: sysinfo::System::new().ok(),
            pid: sysinfo::get_current_pid().ok(),
            every,
            last: Instant::now(),
            gpu,
        };
        // A first refresh: CPU use is measured between two.
        s.refresh();
        s
    }

    fn refresh(&mut self) -> Option<&sysinfo::Process> {
        let (sys, pid) = (self.sys.as_mut()?, self.pid?);
        sys.refresh_processes_specifics(
            sysinfo::ProcessesToUpdate::Some(&[pid]),
            false,
            sysinfo::ProcessRefreshKind::nothing()
                .with_cpu()
                .with_memory()
                .with_tasks(),
        );
        sys.process(pid)
    }

    /// The figures if `every` has passed since the last sample (or `force`).
    pub fn sample(&mut self, force: bool) -> Vec<(&'static str, f64)> {
        // CPU use over less than sysinfo's minimum interval is noise.
        let least = sysinfo::MINIMUM_CPU_UPDATE_INTERVAL;
        if self.last.elapsed() < least || (!force && self.last.elapsed() < self.every) {
            return Vec::new();
        }
        self.last = Instant::now();
        let gpu = self.gpu;
        let mut out = Vec::new();
        if let Some(p) = self.refresh() {
            out.push((keys::CPU_PCT, f64::from(p.cpu_usage())));
            out.push((keys::RSS_MB, p.memory() as f64 / (1024.0 * 1024.0)));
            if let Some(t) = p.tasks() {
                out.push((keys::THREADS, t.len() as f64));
            }
        }
        if let Some(d) = gpu.and_then(|i| nvml()?.device_by_index(i).ok()) {
            if let Ok(u) = d.utilization_rates() {
                out.push((keys::GPU_UTIL_PCT, f64::from(u.gpu)));
            }
            if let Ok(m) = d.memory_info() {
                out.push((keys::GPU_MEM_MB, m.used as f64 / (1024.0 * 1024.0)));
            }
        }
        out
    }
}

/// Tests that must have the process to themselves (torch's global generator, the peak resident
/// memory) rerun themselves alone in a child process of the test binary.
#[cfg(test)]
/// In the child, `true`: run the check. In the parent, run test `name` alone in a child, assert
/// it passed, and return `false`.
pub(crate) fn test_alone(name: &str) -> bool {
    const CHILD: &str = "SHIFTADD_TEST_ALONE";
    if std::env::var_os(CHILD).is_some() {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", name, "--test-threads=1", "--nocapture"])
        .env(CHILD, "1")
        .output()
        .expect("run the check alone");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "the check did not run: {text}");
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repository whose config names a program for `git status` to run (`core.fsmonitor`):
    /// reading its state runs nothing of it.
    #[test]
    fn reading_a_repository_runs_none_of_its_programs() {
        let dir = tempfile::tempdir().expect("tmp");
        let repo = dir.path().join("repo");
        let marker = dir.path().join("ran");
        let hook = dir.path().join("hook.sh");
        std::fs::create_dir(&repo).expect("mkdir");
        std::fs::write(
            &hook,
            format!("#!/bin/sh\ntouch '{}'\nexit 1\n", marker.display()),
        )
        .expect("hook");
        let sh = |args: &[&str]| {
            let ok = std::process::Command::new("sh")
                .arg("-c")
                .arg(args.join(" "))
                .current_dir(&repo)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "{args:?}");
        };
        sh(&["chmod", "+x", &hook.display().to_string()]);
        sh(&["git", "init", "-q"]);
        sh(&["echo", "a", ">", "f"]);
        sh(&["git", "add", "f"]);
        sh(&[
            "git",
            "-c",
            "user.email=t@t",
            "-c",
            "user.name=t",
            "commit",
            "-qm",
            "x",
        ]);
        sh(&[
            "git",
            "config",
            "core.fsmonitor",
            &hook.display().to_string(),
        ]);
        sh(&["echo", "b", ">", "f"]);
        let status = git(&repo, &["status", "--porcelain", "--", "."]);
        assert_eq!(status.as_deref(), Some("M f"), "the tree reads as dirty");
        assert!(git(&repo, &["rev-parse", "HEAD"]).is_some_and(|c| c.len() == 40));
        assert!(
            !marker.exists(),
            "git ran the repository's fsmonitor program"
        );
        // The same repository, read as git does by default, runs it: the test can fail.
        sh(&["git", "status", "--porcelain", ">", "/dev/null"]);
        assert!(marker.exists(), "plain git status runs core.fsmonitor");
    }

    #[test]
    fn provenance_names_versions_cpu_and_this_repository() {
        set_experiments_dir(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../experiments"
        )));
        let p = provenance();
        assert_eq!(p.shiftadd, env!("CARGO_PKG_VERSION"));
        assert!(p.libtorch.starts_with("2."), "{}", p.libtorch);
        assert!(p.cores >= 1);
        assert!(!p.cpu.is_empty());
        // The suite runs in a checkout (CI clones it): a commit of 40 hex digits.
        if let Some(c) = &p.git_commit {
            assert_eq!(c.len(), 40, "{c}");
            assert!(p.git_dirty.is_some());
        }
        let back: Provenance = serde_json::from_str(&provenance_json()).expect("json");
        assert_eq!(back.cpu, p.cpu);
        assert!(p.summary().contains(&p.libtorch));
    }

    #[test]
    fn sampler_reports_this_process() {
        let mut s = SysSampler::new(Duration::from_secs(3600), None);
        assert!(s.sample(false).is_empty(), "not due yet");
        // Busy for a moment so the CPU figure has something to measure.
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < sysinfo::MINIMUM_CPU_UPDATE_INTERVAL * 2 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let got = s.sample(true);
        let get = |k: &str| got.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        let cpu = get(keys::CPU_PCT).expect("cpu");
        assert!(cpu > 1.0 && cpu < 100.0 * 64.0, "{cpu}");
        let rss = get(keys::RSS_MB).expect("rss");
        assert!(rss > 1.0 && rss < 64.0 * 1024.0, "{rss}");
        assert!(get(keys::THREADS).expect("threads") >= 1.0);
    }
}
