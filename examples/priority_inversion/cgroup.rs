//! The `cgroup` scenario's two cpu-controller groups: one for the background owners, one for
//! the hogs, with a weight ratio of 1:128 (cgroup v1 `cpu.shares` 4 and 512, as the original
//! demo; cgroup v2 `cpu.weight` 1 and 128).
//!
//! cgroup v2 keeps all threads of a process in one cgroup unless they are in a threaded
//! subtree, so there the demo makes a parent group, moves the process into it, makes the two
//! groups threaded children of it with the cpu controller enabled, and moves the process back
//! when done. The layout is read from the paths given, so a test can run it on a plain
//! directory laid out as cgroupfs.

use std::path::{Path, PathBuf};

/// Where cgroup filesystems are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Which hierarchy, with its root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hierarchy {
    /// The v1 cpu controller's mount (its groups take `cpu.shares` and `tasks`).
    V1(PathBuf),
    /// The unified hierarchy (`cpu.weight`, `cgroup.threads`), and the process's own group in
    /// it, relative to the root (from `/proc/self/cgroup`'s `0::` line).
    V2 { root: PathBuf, own: PathBuf },
}

impl Hierarchy {
    /// The hierarchy under `root` (normally `/sys/fs/cgroup`) that has a cpu controller, with
    /// `proc_cgroup` the contents of `/proc/self/cgroup`: v2 if `root` is the unified mount
    /// and lists `cpu` in `cgroup.controllers`, else v1 if `root/cpu` has `cpu.shares`.
    pub fn find(root: &Path, proc_cgroup: &str) -> Result<Hierarchy, String> {
        let controllers = std::fs::read_to_string(root.join("cgroup.controllers"));
        if let Ok(list) = controllers {
            if !list.split_whitespace().any(|c| c == "cpu") {
                return Err(format!(
                    "cgroup v2 at {} without the cpu controller (its cgroup.controllers: {})",
                    root.display(),
                    list.trim()
                ));
            }
            let own = proc_cgroup
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .ok_or("no cgroup v2 line in /proc/self/cgroup")?;
            return Ok(Hierarchy::V2 {
                root: root.to_path_buf(),
                own: PathBuf::from(own.trim().trim_start_matches('/')),
            });
        }
        let v1 = root.join("cpu");
        if v1.join("cpu.shares").exists() {
            return Ok(Hierarchy::V1(v1));
        }
        Err(format!(
            "no cpu controller: neither cgroup v2 at {} nor v1 at {}",
            root.display(),
            v1.display()
        ))
    }
}

/// The two groups. Removed on drop (after the process moved back, on v2); threads that
/// exited have already left them.
pub struct Groups {
    pub background: PathBuf,
    pub hogs: PathBuf,
    hierarchy: Hierarchy,
    /// v2: the parent group the process was moved into.
    parent: Option<PathBuf>,
    /// The directories made, in order, to remove in reverse.
    made: Vec<PathBuf>,
}

/// A file write with the path in its error.
fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value)
        .map_err(|e| format!("cannot write {value} to {}: {e}", path.display()))
}

impl Groups {
    /// Both groups on this machine's hierarchy, or why not.
    pub fn create() -> Result<Groups, String> {
        let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let hierarchy = Hierarchy::find(Path::new(CGROUP_ROOT), &proc_cgroup)?;
        Groups::create_in(hierarchy, std::process::id())
    }

    /// Both groups in `hierarchy`, for process `pid`.
    pub fn create_in(hierarchy: Hierarchy, pid: u32) -> Result<Groups, String> {
        let name = format!("proxy_lock_demo_{pid}");
        let mut groups = Groups {
            background: PathBuf::new(),
            hogs: PathBuf::new(),
            hierarchy: hierarchy.clone(),
            parent: None,
            made: Vec::new(),
        };
        // Dropped on an error, `groups` undoes what was done so far.
        let mkdir = |groups: &mut Groups, dir: PathBuf| -> Result<PathBuf, String> {
            std::fs::create_dir(&dir)
                .map_err(|e| format!("cannot create {}: {e} (needs root)", dir.display()))?;
            groups.made.push(dir.clone());
            Ok(dir)
        };
        match &hierarchy {
            Hierarchy::V1(root) => {
                groups.background = mkdir(&mut groups, root.join(format!("{name}_background")))?;
                groups.hogs = mkdir(&mut groups, root.join(format!("{name}_hogs")))?;
                write(&groups.background.join("cpu.shares"), "4")?;
                write(&groups.hogs.join("cpu.shares"), "512")?;
            }
            Hierarchy::V2 { root, .. } => {
                write(&root.join("cgroup.subtree_control"), "+cpu")?;
                let parent = mkdir(&mut groups, root.join(&name))?;
                write(&parent.join("cgroup.procs"), &pid.to_string())?;
                groups.parent = Some(parent.clone());
                groups.background = mkdir(&mut groups, parent.join("background"))?;
                groups.hogs = mkdir(&mut groups, parent.join("hogs"))?;
                for group in [&groups.background, &groups.hogs] {
                    write(&group.join("cgroup.type"), "threaded")?;
                }
                write(&parent.join("cgroup.subtree_control"), "+cpu")?;
                write(&groups.background.join("cpu.weight"), "1")?;
                write(&groups.hogs.join("cpu.weight"), "128")?;
            }
        }
        Ok(groups)
    }

    /// Moves thread `tid` (the caller) into `group`, one of the two.
    pub fn join(&self, group: &Path, tid: i32) -> Result<(), String> {
        let file = match self.hierarchy {
            Hierarchy::V1(_) => "tasks",
            Hierarchy::V2 { .. } => "cgroup.threads",
        };
        write(&group.join(file), &tid.to_string())
    }
}

impl Drop for Groups {
    fn drop(&mut self) {
        // v2: the process goes back where it was, so the parent group empties.
        if let (Some(_), Hierarchy::V2 { root, own }) = (&self.parent, &self.hierarchy) {
            let pid = std::process::id().to_string();
            if let Err(e) = write(&root.join(own).join("cgroup.procs"), &pid) {
                eprintln!("warning: {e}");
            }
        }
        // The demo's threads have exited, so each group is empty and can go.
        for dir in self.made.iter().rev().filter(|d| d.exists()) {
            if let Err(e) = std::fs::remove_dir(dir) {
                eprintln!("warning: cannot remove {}: {e}", dir.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Groups, Hierarchy};
    use std::path::{Path, PathBuf};

    /// A fresh directory under the target dir, as a stand-in for a cgroupfs mount.
    fn fake_root(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("proxy_lock_cgroup_{}_{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// A real cgroupfs drops a group's control files with it; a plain directory needs them
    /// removed first.
    fn remove_control_files(dir: &Path) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::remove_file(path).unwrap();
            }
        }
    }

    #[test]
    fn finds_v2_with_the_cpu_controller_and_the_process_group() {
        let root = fake_root("find2");
        std::fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let found = Hierarchy::find(&root, "0::/user.slice/session-1.scope\n").unwrap();
        assert_eq!(
            found,
            Hierarchy::V2 {
                root: root.clone(),
                own: PathBuf::from("user.slice/session-1.scope")
            }
        );
        std::fs::write(root.join("cgroup.controllers"), "io memory\n").unwrap();
        let err = Hierarchy::find(&root, "0::/\n").unwrap_err();
        assert!(err.contains("without the cpu controller"), "{err}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn finds_v1_and_says_why_when_there_is_neither() {
        let root = fake_root("find1");
        let err = Hierarchy::find(&root, "").unwrap_err();
        assert!(err.contains("no cpu controller"), "{err}");
        std::fs::create_dir(root.join("cpu")).unwrap();
        std::fs::write(root.join("cpu/cpu.shares"), "1024\n").unwrap();
        assert_eq!(
            Hierarchy::find(&root, "").unwrap(),
            Hierarchy::V1(root.join("cpu"))
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    /// The v2 layout, written into a plain directory: the cpu controller enabled at the root
    /// and in a parent group the process moves into, two threaded children weighted 1 and 128,
    /// threads joined through `cgroup.threads`, and on drop the process moved back and the
    /// groups removed.
    #[test]
    fn v2_makes_a_threaded_subtree_and_undoes_it() {
        let root = fake_root("v2");
        std::fs::create_dir(root.join("own")).unwrap();
        let hierarchy = Hierarchy::V2 {
            root: root.clone(),
            own: PathBuf::from("own"),
        };
        let groups = Groups::create_in(hierarchy, 4242).unwrap();
        let parent = root.join("proxy_lock_demo_4242");
        assert_eq!(groups.background, parent.join("background"));
        assert_eq!(groups.hogs, parent.join("hogs"));
        assert_eq!(read(&root.join("cgroup.subtree_control")), "+cpu");
        assert_eq!(read(&parent.join("cgroup.procs")), "4242");
        assert_eq!(read(&parent.join("cgroup.subtree_control")), "+cpu");
        for (group, weight) in [(&groups.background, "1"), (&groups.hogs, "128")] {
            assert_eq!(read(&group.join("cgroup.type")), "threaded");
            assert_eq!(read(&group.join("cpu.weight")), weight);
        }
        groups.join(&groups.hogs, 77).unwrap();
        assert_eq!(read(&groups.hogs.join("cgroup.threads")), "77");
        for dir in [&groups.background, &groups.hogs, &parent] {
            remove_control_files(dir);
        }
        drop(groups);
        assert!(!parent.exists(), "the groups are removed");
        assert_eq!(
            read(&root.join("own/cgroup.procs")),
            std::process::id().to_string(),
            "the process moved back"
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn v1_makes_two_groups_with_shares_and_removes_them() {
        let root = fake_root("v1");
        let groups = Groups::create_in(Hierarchy::V1(root.clone()), 4242).unwrap();
        assert_eq!(read(&groups.background.join("cpu.shares")), "4");
        assert_eq!(read(&groups.hogs.join("cpu.shares")), "512");
        groups.join(&groups.background, 78).unwrap();
        assert_eq!(read(&groups.background.join("tasks")), "78");
        let dirs = [groups.background.clone(), groups.hogs.clone()];
        for dir in &dirs {
            remove_control_files(dir);
        }
        drop(groups);
        assert!(dirs.iter().all(|d| !d.exists()));
        std::fs::remove_dir_all(root).unwrap();
    }

    /// A failure halfway (the second group cannot be made) leaves nothing behind.
    #[test]
    fn a_failed_creation_removes_what_it_made() {
        let root = fake_root("fail");
        std::fs::create_dir(root.join("proxy_lock_demo_4242_hogs")).unwrap();
        let err = Groups::create_in(Hierarchy::V1(root.clone()), 4242)
            .err()
            .expect("the second group exists already");
        assert!(err.contains("cannot create"), "{err}");
        assert!(!root.join("proxy_lock_demo_4242_background").exists());
        std::fs::remove_dir_all(root).unwrap();
    }
}
