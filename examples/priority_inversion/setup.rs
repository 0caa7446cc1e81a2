//! Thread attributes the scenarios need: CPU pinning, scheduling policies, cgroups. Each setter
//! acts on the calling thread and returns an error saying what failed. Also the stop of a
//! kernel trace at a long wait (`--trace-stop-us`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Pins the calling thread to `cpu`.
pub fn pin(cpu: usize) -> Result<(), String> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: cpu < CPU_SETSIZE (the caller checks it against the CPU count).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: valid set of the size passed; 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(os_err(&format!("pin to CPU {cpu}")))
    }
}

/// Sets the calling thread's policy (and priority, for SCHED_FIFO).
pub fn set_policy(policy: libc::c_int, priority: libc::c_int) -> Result<(), String> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: valid param; 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } == 0 {
        Ok(())
    } else {
        Err(os_err("sched_setscheduler"))
    }
}

/// Whether this process may make a thread SCHED_FIFO: tried on a throwaway thread.
pub fn can_use_fifo() -> Result<(), String> {
    std::thread::spawn(|| set_policy(libc::SCHED_FIFO, 1))
        .join()
        .unwrap_or_else(|_| Err("probe thread panicked".into()))
        .map_err(|e| format!("SCHED_FIFO not allowed ({e}); needs CAP_SYS_NICE or RLIMIT_RTPRIO"))
}

/// Two cpu-controller groups (cgroup v1 `cpu.shares`): one for the background owners, one for
/// the hogs. Removed on drop; threads that exited have already left them.
pub struct Groups {
    pub background: PathBuf,
    pub hogs: PathBuf,
}

/// The cgroup v1 cpu controller's mount point.
const CPU_V1: &str = "/sys/fs/cgroup/cpu";

impl Groups {
    /// Creates both groups with the given shares, or says why it cannot.
    pub fn create(background_shares: u32, hog_shares: u32) -> Result<Groups, String> {
        let root = Path::new(CPU_V1);
        if !root.join("cpu.shares").exists() {
            return Err(format!(
                "no cgroup v1 cpu controller at {CPU_V1} (cgroup v2 is not supported by this demo)"
            ));
        }
        let pid = std::process::id();
        let groups = Groups {
            background: root.join(format!("proxy_lock_demo_{pid}_background")),
            hogs: root.join(format!("proxy_lock_demo_{pid}_hogs")),
        };
        for (dir, shares) in [
            (&groups.background, background_shares),
            (&groups.hogs, hog_shares),
        ] {
            std::fs::create_dir(dir)
                .map_err(|e| format!("cannot create {}: {e} (needs root)", dir.display()))?;
            std::fs::write(dir.join("cpu.shares"), shares.to_string())
                .map_err(|e| format!("cannot set {}/cpu.shares: {e}", dir.display()))?;
        }
        Ok(groups)
    }
}

/// Moves the calling thread into `group`.
pub fn join_group(group: &Path) -> Result<(), String> {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    std::fs::write(group.join("tasks"), tid.to_string())
        .map_err(|e| format!("cannot move thread {tid} into {}: {e}", group.display()))
}

impl Drop for Groups {
    fn drop(&mut self) {
        for dir in [&self.background, &self.hogs] {
            // The demo's threads have exited, so the group is empty and can go.
            if let Err(e) = std::fs::remove_dir(dir) {
                eprintln!("warning: cannot remove {}: {e}", dir.display());
            }
        }
    }
}

/// The `rename` section's two file names, in a directory of their own; removed on drop.
pub struct RenameDir {
    dir: PathBuf,
    pub a: PathBuf,
    pub b: PathBuf,
}

impl RenameDir {
    pub fn create() -> Result<RenameDir, String> {
        let dir = std::env::temp_dir().join(format!("proxy_lock_demo_{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::write(&a, b"x").map_err(|e| format!("cannot create {}: {e}", a.display()))?;
        Ok(RenameDir { dir, a, b })
    }
}

impl Drop for RenameDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `--trace-stop-us`: stops the kernel's trace ring (tracefs `tracing_on`) at the first
/// proxy-lock wait longer than a threshold, so that the ring ends with what led up to that
/// wait. Starting the ring and choosing its events is the caller's part
/// (`scripts/trace_long_waits.sh`).
pub struct TraceStop {
    after: Duration,
    tracing_on: std::fs::File,
    stopped: AtomicBool,
}

/// Where tracefs is mounted: its own mount point, or under debugfs on older setups.
const TRACING_ON: [&str; 2] = [
    "/sys/kernel/tracing/tracing_on",
    "/sys/kernel/debug/tracing/tracing_on",
];

impl TraceStop {
    /// Opens `tracing_on` for writing, or says why it cannot (tracefs needs root).
    pub fn open(after: Duration) -> Result<TraceStop, String> {
        let mut why = Vec::new();
        for path in TRACING_ON {
            match std::fs::OpenOptions::new().write(true).open(path) {
                Ok(tracing_on) => {
                    return Ok(TraceStop {
                        after,
                        tracing_on,
                        stopped: AtomicBool::new(false),
                    });
                }
                Err(e) => why.push(format!("{path}: {e}")),
            }
        }
        Err(format!(
            "cannot open tracefs's tracing_on ({}); needs root and tracefs",
            why.join("; ")
        ))
    }

    /// Called with each wait of `lock` as the foreground's section starts: stops the ring at the
    /// first wait over the threshold (once per process), and says so on stderr.
    pub fn check(&self, wait: Duration, lock: &str) {
        // Relaxed: a once-only flag; the ring is stopped by the write, not by this.
        if wait <= self.after || self.stopped.swap(true, Ordering::Relaxed) {
            return;
        }
        let stopped = (&self.tracing_on).write_all(b"0");
        eprintln!(
            "trace stopped at a {lock} wait of {:.1} µs: {stopped:?}",
            wait.as_secs_f64() * 1e6
        );
    }
}
