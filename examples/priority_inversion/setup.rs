//! Thread attributes the scenarios need: CPU pinning, scheduling policies, privileges (the
//! cgroups are `cgroup.rs`'s). Each setter acts on the calling thread and returns an error
//! saying what failed. Also the stop of a kernel trace at a long wait (`--trace-stop-us`).

use std::io::Write;
use std::path::PathBuf;
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

/// The calling thread's kernel id.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
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

/// `--unprivileged`: takes CAP_SYS_NICE out of the calling thread's effective, permitted and
/// inheritable sets and RLIMIT_NICE and RLIMIT_RTPRIO down to 0, before any other thread
/// exists, so every thread the demo makes starts without it. What is left to lend is the CPU.
/// The process stays root otherwise (cgroups still work).
pub fn drop_cap_sys_nice() -> Result<(), String> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_SYS_NICE: u32 = 23;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: a v3 header and the two data words v3 writes.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(os_err("capget"));
    }
    let nice = !(1u32 << CAP_SYS_NICE);
    data[0].effective &= nice;
    data[0].permitted &= nice;
    data[0].inheritable &= nice;
    // SAFETY: the same header and data words, read back just above.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(os_err("capset"));
    }
    for resource in [libc::RLIMIT_NICE, libc::RLIMIT_RTPRIO] {
        let zero = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid rlimit; lowering a limit needs no privilege.
        if unsafe { libc::setrlimit(resource, &zero) } != 0 {
            return Err(os_err("setrlimit"));
        }
    }
    Ok(())
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
