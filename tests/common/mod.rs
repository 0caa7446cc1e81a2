//! Helpers shared by the integration tests that set and read real scheduling attributes:
//! readers of `/proc/self/task/<tid>/{stat,status}` and thin wrappers of the setters.
#![allow(dead_code)] // each test crate uses its own subset

use proxy_lock::current_tid;

/// (policy, nice, rt_priority) of thread `tid`, from `/proc/self/task/<tid>/stat`.
pub fn sched_of(tid: i32) -> (i32, i32, u32) {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // Fields after the command name, which is parenthesised and may contain spaces.
    let rest: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    // Field n of proc(5) is rest[n - 3]: nice is 19, rt_priority 40, policy 41.
    (
        rest[38].parse().unwrap(),
        rest[16].parse().unwrap(),
        rest[37].parse().unwrap(),
    )
}

pub fn nice_of(tid: i32) -> i32 {
    sched_of(tid).1
}

/// The CPUs thread `tid` may run on, from `Cpus_allowed_list` in its status file.
pub fn cpus_of(tid: i32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim();
    let mut cpus = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<u32>().unwrap()..=b.parse().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

pub fn set_nice(nice: i32) {
    // SAFETY: setpriority on the calling thread's tid; no pointers.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, current_tid() as libc::id_t, nice) };
    assert_eq!(rc, 0, "setpriority: {}", std::io::Error::last_os_error());
}

pub fn set_policy(tid: i32, policy: i32, priority: i32) {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: valid sched_param for the call.
    let rc = unsafe { libc::sched_setscheduler(tid, policy, &param) };
    assert_eq!(
        rc,
        0,
        "sched_setscheduler: {}",
        std::io::Error::last_os_error()
    );
}

pub fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
        assert_eq!(
            rc,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}
