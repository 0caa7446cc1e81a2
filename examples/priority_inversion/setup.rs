//! Thread attributes the scenarios need: CPU pinning, scheduling policies, cgroups. Each setter
//! acts on the calling thread and returns an error saying what failed.

use std::path::{Path, PathBuf};

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
