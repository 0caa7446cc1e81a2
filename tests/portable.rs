//! What a build that does not donate promises (another OS, or the `donation` feature off): the
//! same locks, with `capabilities()` saying why nothing is lent and counters that show nothing
//! was tried. Where the crate donates, the same test checks the opposite report.
//!
//! CI runs the whole suite both ways on Linux: `cargo test` and
//! `cargo test --no-default-features`.

use proxy_lock::{Condvar, Mutex, Policy, capabilities, counters};
use std::sync::Arc;

#[test]
fn capabilities_say_whether_and_why_nothing_is_lent() {
    let caps = capabilities();
    if cfg!(donates) {
        assert_eq!(caps.unavailable, None);
        return;
    }
    let why = caps
        .unavailable
        .expect("a build that does not donate says why");
    if cfg!(target_os = "linux") {
        assert!(why.contains("`donation` cargo feature"), "{why}");
    } else {
        assert_eq!(why, "not supported on this platform");
    }
    assert!(!caps.cap_sys_nice && !caps.can_lower_nice && !caps.can_leave_idle);
    assert!(!caps.can_lend_realtime && !caps.can_change_affinity && !caps.util_clamp);
    assert!(caps.to_string().contains(why));
}

/// Contended locks of every policy, with guards, `run` and a Condvar: a build that does not
/// donate lends nothing, reads no attributes, fails nothing and skips nothing (it never
/// looked), and the locks still exclude and hand over.
#[test]
fn a_build_that_does_not_donate_tries_nothing_and_locks_alike() {
    if cfg!(donates) {
        return; // covered by tests/donation.rs
    }
    let before = counters();
    for policy in [Policy::Spin, Policy::Handoff, Policy::Adaptive] {
        let m = Arc::new(Mutex::with_policy(0u64, policy));
        let cv = Arc::new(Condvar::new());
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let (m, cv) = (Arc::clone(&m), Arc::clone(&cv));
                std::thread::spawn(move || {
                    for _ in 0..2_000 {
                        if i % 2 == 0 {
                            *m.lock().unwrap() += 1;
                        } else {
                            m.run(|v| *v += 1).unwrap();
                        }
                        cv.notify_one();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*m.lock().unwrap(), 8_000);
    }
    let after = counters();
    assert_eq!(after.donations, before.donations);
    assert_eq!(after.restores, before.restores);
    assert_eq!(after.skipped, before.skipped);
    assert_eq!(after.attribute_reads, before.attribute_reads);
    assert_eq!(
        (
            after.failed_permission,
            after.failed_gone,
            after.failed_other
        ),
        (
            before.failed_permission,
            before.failed_gone,
            before.failed_other
        )
    );
}
