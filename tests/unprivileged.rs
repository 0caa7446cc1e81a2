//! Donation in a process without CAP_SYS_NICE: the test re-runs itself in a child process,
//! which sets RLIMIT_NICE and RLIMIT_RTPRIO to 0 and gives up root for every thread (glibc's
//! `setresuid` applies to all threads, and leaving uid 0 clears their capabilities). In the
//! child, loans the kernel refuses fail with EPERM and are counted, no owner gets a better
//! policy, nice or priority than it had, the CPU loans an unprivileged process may still make
//! are made and undone, and the locks keep working.
//!
//! Two more tests grant, without root, what the README says how to grant:
//! * RLIMIT_NICE raised to 30 first (what `prlimit --nice=30`, systemd's `LimitNICE=-10` or
//!   `/etc/security/limits.conf` give a process): nice loans down to nice -10, and out of
//!   SCHED_IDLE, are made and restored. Raising the limit needs CAP_SYS_RESOURCE, which some
//!   containers' root lacks; the test then says so and skips.
//! * CAP_SYS_NICE kept across the move to `nobody` (what `setcap cap_sys_nice+ep` or systemd's
//!   `AmbientCapabilities=CAP_SYS_NICE` give a process): every loan is made and restored.
//!
//! Needs root to give up (CI runs as root). Without it, the test says so and skips.
//!
//! Compiled only where the crate donates (`cfg(donates)`: Linux, `donation` feature on).
#![cfg(donates)]

mod common;
#[path = "../benches/workloads/deep_chain.rs"]
#[allow(dead_code)] // only the chain is used here
mod deep_chain;

use common::{
    Owner, asleep_on, cpus_of, eventually, pin, sched_of, set_nice, set_policy, spawn_waiter,
};
use proxy_lock::{Mutex, Policy, capabilities, counters, current_tid};
use std::process::Command;
use std::sync::Arc;
use std::sync::mpsc::channel;
use std::thread;

/// Set in the child's environment: the test then runs the child's half.
const CHILD: &str = "PROXY_LOCK_UNPRIVILEGED_CHILD";
const TEST: &str = "donation_in_a_process_without_cap_sys_nice";
/// The child prints this last; the parent requires it, so a child that ran no test fails.
const PASSED: &str = "unprivileged child: every check passed";
/// Where the child goes: `nobody`.
const NOBODY: libc::uid_t = 65534;

#[test]
fn donation_in_a_process_without_cap_sys_nice() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    run_child(TEST);
}

const RLIMIT_TEST: &str = "a_raised_rlimit_nice_lends_nice_without_privilege";

#[test]
fn a_raised_rlimit_nice_lends_nice_without_privilege() {
    if std::env::var_os(CHILD).is_some() {
        return rlimit_child();
    }
    if !has_effective_cap(CAP_SYS_RESOURCE) {
        common::skip(
            RLIMIT_TEST,
            "needs CAP_SYS_RESOURCE to raise RLIMIT_NICE for the child (this root lacks it)",
        );
        return;
    }
    run_child(RLIMIT_TEST);
}

const CAP_TEST: &str = "a_process_with_cap_sys_nice_but_not_root_lends_nice";

#[test]
fn a_process_with_cap_sys_nice_but_not_root_lends_nice() {
    if std::env::var_os(CHILD).is_some() {
        return cap_child();
    }
    run_child(CAP_TEST);
}

const CAP_SYS_NICE: u32 = 23;
const CAP_SYS_RESOURCE: u32 = 24;

/// Whether the calling thread has capability `cap` in its effective set (`CapEff` in its
/// status file).
fn has_effective_cap(cap: u32) -> bool {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    eff & (1 << cap) != 0
}

/// The child's half of the capability test: leaves root for `nobody` keeping CAP_SYS_NICE
/// (and nothing else) in this thread, whose later threads inherit it, as a binary given the
/// capability by `setcap` or systemd would have it; then the same loans as `rlimit_child`, and
/// a real-time one.
fn cap_child() {
    set_rlimit(libc::RLIMIT_NICE, 0);
    keep_only_cap_sys_nice_and_leave_root();
    let caps = capabilities();
    println!("{caps}");
    // SAFETY: geteuid has no preconditions.
    assert_ne!(unsafe { libc::geteuid() }, 0, "still root");
    assert!(caps.cap_sys_nice, "{caps}");
    assert!(
        caps.can_lower_nice && caps.can_leave_idle && caps.can_lend_realtime,
        "{caps}"
    );
    lends_nice_and_restores(true);
    println!("{PASSED}");
}

/// Keeps CAP_SYS_NICE in this thread's permitted and effective sets while it and the rest of
/// the process leave root (other threads lose every capability).
fn keep_only_cap_sys_nice_and_leave_root() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    // SAFETY: prctl with plain integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1) };
    assert_eq!(rc, 0, "PR_SET_KEEPCAPS");
    give_up_root();
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let nice = Data {
        effective: 1 << CAP_SYS_NICE,
        permitted: 1 << CAP_SYS_NICE,
        inheritable: 0,
    };
    let none = Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    };
    let data = [nice, none];
    // SAFETY: a v3 header and the two data words v3 reads.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
}

/// Runs `test` again in a child process (which takes the child's half), as root; skips if not
/// root.
fn run_child(test: &str) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        common::skip(
            test,
            "needs root, to give up its privileges in a child process",
        );
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("the test binary runs again as a child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(out.status.success(), "the child failed: {}", out.status);
    assert!(stdout.contains(PASSED), "the child did not run its checks");
}

/// The child's half of the RLIMIT_NICE test: RLIMIT_NICE 30 (nice down to -10), then no root.
/// `capabilities()` says so; a nice-0 waiter lends nice 0 to a nice-10 owner and to a
/// SCHED_IDLE owner, which leaves SCHED_IDLE, and each gets its own back; real-time loans stay
/// refused.
fn rlimit_child() {
    set_rlimit(libc::RLIMIT_NICE, 30);
    set_rlimit(libc::RLIMIT_RTPRIO, 0);
    give_up_root();
    let caps = capabilities();
    println!("{caps}");
    assert!(!caps.cap_sys_nice, "still privileged: {caps}");
    assert_eq!(caps.rlimit_nice, 30);
    assert!(caps.can_lower_nice && caps.can_leave_idle, "{caps}");
    assert!(!caps.can_lend_realtime, "{caps}");
    lends_nice_and_restores(false);
    println!("{PASSED}");
}

/// A nice-0 waiter lends nice 0 to a nice-10 owner and to a SCHED_IDLE owner, which leaves
/// SCHED_IDLE, and each gets its own back; with `realtime`, a SCHED_FIFO waiter lends its
/// priority too. Nothing is refused.
fn lends_nice_and_restores(realtime: bool) {
    let before = counters();
    let m = Arc::new(Mutex::new(()));
    let owners: [fn(); 2] = [|| set_nice(10), || set_policy(0, libc::SCHED_IDLE, 0)];
    for owner_setup in owners {
        let owner = Owner::spawn(&m, owner_setup);
        let owner_base = sched_of(owner.tid);
        let (_, waiter) = spawn_waiter(&m, || set_nice(0), None);
        assert_eq!(
            sched_of(owner.tid),
            (libc::SCHED_OTHER, 0, 0),
            "the waiter's nice is lent (from {owner_base:?})"
        );
        owner.release();
        assert!(waiter.join().unwrap());
        assert_eq!(
            sched_of(owner.tid),
            owner_base,
            "the owner gets its own back"
        );
        owner.finish();
    }
    if realtime {
        let owner = Owner::spawn(&m, || set_nice(5));
        let (_, waiter) = spawn_waiter(&m, || set_policy(0, libc::SCHED_FIFO, 10), None);
        let (policy, _, priority) = sched_of(owner.tid);
        assert_eq!((policy, priority), (libc::SCHED_FIFO, 10), "FIFO lent");
        owner.release();
        assert!(waiter.join().unwrap());
        assert_eq!(sched_of(owner.tid), (libc::SCHED_OTHER, 5, 0));
        owner.finish();
    }
    let after = counters();
    assert!(after.donations >= before.donations + 2, "{after:?}");
    assert_eq!(
        after.failed_permission, before.failed_permission,
        "{after:?}"
    );
}

/// The child's half: drops privileges, then checks a nice loan, a realtime loan to a
/// SCHED_IDLE owner, and contended use of all three policies.
fn child() {
    set_rlimit(libc::RLIMIT_NICE, 0);
    set_rlimit(libc::RLIMIT_RTPRIO, 0);
    let two_cpus = thread::available_parallelism().map_or(1, |n| n.get()) >= 2;

    // Set up as root what an unprivileged process may not: a SCHED_FIFO waiter-to-be.
    let m = Arc::new(Mutex::new(()));
    let (go_tx, go_rx) = channel::<()>();
    let (tid_tx, tid_rx) = channel();
    let fifo_waiter = {
        let m = Arc::clone(&m);
        thread::spawn(move || {
            set_policy(0, libc::SCHED_FIFO, 10);
            if two_cpus {
                pin(1);
            }
            tid_tx.send(current_tid()).unwrap();
            go_rx.recv().unwrap();
            drop(m.lock().unwrap());
        })
    };
    let fifo_tid = tid_rx.recv().unwrap();

    give_up_root();
    let caps = capabilities();
    assert!(!caps.cap_sys_nice, "still privileged: {caps}");
    assert!(!caps.can_lower_nice && !caps.can_leave_idle && !caps.can_lend_realtime);
    println!("{caps}");
    let before = counters();

    // A nice-0 waiter on CPU 1 and a nice-10 owner pinned to CPU 0: the nice loan is refused,
    // the CPU loan (same user, so allowed) is made and undone.
    let owner = Owner::spawn(&m, move || {
        set_nice(10);
        pin(0);
    });
    let owner_base = sched_of(owner.tid);
    let (_, nice_waiter) = spawn_waiter(
        &m,
        move || {
            if two_cpus {
                pin(1);
            }
        },
        None,
    );
    assert_eq!(
        sched_of(owner.tid),
        owner_base,
        "no boost beyond what is allowed"
    );
    if two_cpus {
        assert_eq!(cpus_of(owner.tid), [1], "the CPU loan is allowed and made");
    }
    owner.release();
    assert!(nice_waiter.join().unwrap(), "the lock still works");
    eventually("the owner's CPU to come back", || cpus_of(owner.tid) == [0]);
    assert_eq!(sched_of(owner.tid), owner_base);
    owner.finish();

    // The FIFO waiter set up as root, and a SCHED_IDLE owner: the realtime loan is refused.
    let owner = Owner::spawn(&m, || set_policy(0, libc::SCHED_IDLE, 0));
    let (owner_base, owner_cpus) = (sched_of(owner.tid), cpus_of(owner.tid));
    assert_eq!(owner_base.0, libc::SCHED_IDLE);
    go_tx.send(()).unwrap();
    eventually("the FIFO waiter to sleep on the lock", || {
        asleep_on(fifo_tid, &m)
    });
    assert_eq!(
        sched_of(owner.tid),
        owner_base,
        "no boost beyond what is allowed"
    );
    owner.release();
    fifo_waiter.join().unwrap();
    assert_eq!(sched_of(owner.tid), owner_base);
    eventually("the owner's CPUs to come back", || {
        cpus_of(owner.tid) == owner_cpus
    });
    owner.finish();

    let after = counters();
    assert!(
        after.failed_permission >= before.failed_permission + 2,
        "both refused loans counted: {after:?}"
    );
    assert_eq!(after.last_errno, libc::EPERM);
    for policy in [Policy::Spin, Policy::Handoff, Policy::Adaptive] {
        contended_use_still_works(policy);
    }
    a_refused_loan_is_not_retried_while_it_stays_the_same();
    if two_cpus {
        a_lent_cpu_reaches_the_owner_a_boosted_owner_waits_for();
    }
    println!("counters: {}", counters());
    println!("{PASSED}");
}

/// With CPU loans alone, a chain that forms after the loan: X (CPU 0) holds A, and the
/// foreground (CPU 1) waits for A, lending CPU 1 to X. Then X, still holding A, waits for B,
/// held by Y (CPU 0). X looks no better than Y (a CPU is all it was lent), but it carries the
/// foreground's loan, which must reach Y: Y may then run on CPU 1, and gets CPU 0 back once
/// the foreground's wait ends. (Before a boosted waiter listed itself, Y stayed on CPU 0
/// behind whatever ran there: 20 ms waits in 3 of 4 unprivileged runs of the demo's `chain`.)
fn a_lent_cpu_reaches_the_owner_a_boosted_owner_waits_for() {
    let (a, b) = (Arc::new(Mutex::new(())), Arc::new(Mutex::new(())));
    let y = Owner::spawn(&b, || pin(0));
    let (x_tid_tx, x_tid_rx) = channel();
    let (x_go_tx, x_go_rx) = channel::<()>();
    let (ax, bx) = (Arc::clone(&a), Arc::clone(&b));
    let x = thread::spawn(move || {
        pin(0);
        let ga = ax.lock().unwrap();
        x_tid_tx.send(current_tid()).unwrap();
        x_go_rx.recv().unwrap();
        drop(bx.lock().unwrap());
        drop(ga);
    });
    let x_tid = x_tid_rx.recv().unwrap();
    let (_, foreground) = spawn_waiter(&a, || pin(1), None);
    assert_eq!(cpus_of(x_tid), [1], "the foreground's CPU is lent to X");
    x_go_tx.send(()).unwrap();
    eventually("X to sleep on B", || asleep_on(x_tid, &b));
    assert_eq!(cpus_of(y.tid), [1], "and through X to Y");
    y.release();
    x.join().unwrap();
    assert!(foreground.join().unwrap());
    eventually("Y's CPU to come back", || cpus_of(y.tid) == [0]);
    y.finish();
}

/// A chain of 64 nice-19 owners with a nice-0 waiter at its end, unwound: each owner is lent
/// nice 0 and the kernel refuses it. Each hop reconciles the whole chain; a refused loan that
/// has not changed is not tried again, so the refusals stay about linear in the depth (they
/// were about depth² / 2 when every reconcile retried every owner).
fn a_refused_loan_is_not_retried_while_it_stays_the_same() {
    const DEPTH: u64 = 64;
    let before = counters().failed_permission;
    deep_chain::unwind_time(DEPTH as usize);
    let refused = counters().failed_permission - before;
    println!("a {DEPTH}-deep chain: {refused} refused loans");
    assert!(refused > 0, "no loan was tried, so nothing was checked");
    assert!(
        refused <= 4 * DEPTH,
        "{refused} refused loans for a {DEPTH}-deep chain: refused loans are retried"
    );
}

/// Four threads at nice 0, 5, 10 and 19 add to one counter under `policy`: loans among them
/// are refused, and the count is exact.
fn contended_use_still_works(policy: Policy) {
    const ADDS: usize = 20_000;
    let m = Arc::new(Mutex::with_policy(0usize, policy));
    let threads: Vec<_> = [0, 5, 10, 19]
        .into_iter()
        .map(|nice| {
            let m = Arc::clone(&m);
            thread::spawn(move || {
                set_nice(nice);
                let base = sched_of(current_tid());
                for _ in 0..ADDS {
                    *m.lock().unwrap() += 1;
                }
                assert_eq!(sched_of(current_tid()), base, "ends at its base");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*m.lock().unwrap(), 4 * ADDS, "{policy:?}");
}

fn set_rlimit(resource: libc::__rlimit_resource_t, value: libc::rlim_t) {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: a valid rlimit for the call.
    let rc = unsafe { libc::setrlimit(resource, &lim) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

/// Leaves root for `nobody`, in every thread of the process, and clears every capability.
fn give_up_root() {
    // SAFETY: plain syscalls on ids; glibc applies them to every thread of the process.
    unsafe {
        assert_eq!(libc::setresgid(NOBODY, NOBODY, NOBODY), 0, "setresgid");
        assert_eq!(libc::setresuid(NOBODY, NOBODY, NOBODY), 0, "setresuid");
        // Leaving root makes the process non-dumpable, which hides parts of /proc; the checks
        // read /proc, so make it dumpable again (this grants nothing).
        assert_eq!(libc::prctl(libc::PR_SET_DUMPABLE, 1), 0, "PR_SET_DUMPABLE");
    }
}
