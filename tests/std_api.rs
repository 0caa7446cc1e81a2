//! Conformance with std::sync::{Mutex, Condvar}: every stable behaviour, plus the extensions.

use proxy_lock::{Condvar, Mutex, MutexGuard, Policy, current_tid, thread_blocked_on};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::channel;
use std::sync::{Arc, TryLockError};
use std::thread;
use std::time::{Duration, Instant};

const POLICIES: [Policy; 3] = [Policy::Spin, Policy::Handoff, Policy::Adaptive];

fn poison<T: Send + 'static>(m: &Arc<Mutex<T>>) {
    let m2 = Arc::clone(m);
    let r = thread::spawn(move || {
        let _g = m2.lock().unwrap();
        panic!("poisoning on purpose");
    })
    .join();
    assert!(r.is_err());
}

#[test]
fn lock_try_lock_and_unlock() {
    for p in POLICIES {
        let m = Mutex::with_policy(1, p);
        {
            let mut g = m.lock().unwrap();
            *g += 1;
            assert!(matches!(m.try_lock(), Err(TryLockError::WouldBlock)));
        }
        assert_eq!(*m.try_lock().unwrap(), 2);
        assert_eq!(m.policy(), p);
    }
}

#[test]
fn const_new_in_static() {
    static M: Mutex<u32> = Mutex::new(5);
    static H: Mutex<u32> = Mutex::with_policy(6, Policy::Handoff);
    *M.lock().unwrap() += 1;
    assert_eq!(*M.lock().unwrap(), 6);
    assert_eq!(*H.lock().unwrap(), 6);
    assert_eq!(Mutex::new(()).policy(), Policy::Adaptive);
}

#[test]
fn poisoning_matches_std() {
    let m = Arc::new(Mutex::new(1));
    poison(&m);
    assert!(m.is_poisoned());
    // lock, try_lock and the data behind them
    let err = m.lock().unwrap_err();
    assert_eq!(**err.get_ref(), 1);
    drop(err);
    assert!(matches!(m.try_lock(), Err(TryLockError::Poisoned(_))));
    // a guard taken from a poisoned mutex does not un-poison it
    assert!(m.is_poisoned());
    m.clear_poison();
    assert!(!m.is_poisoned());
    assert_eq!(*m.lock().unwrap(), 1);
    // into_inner and get_mut
    poison(&m);
    let mut inner = Arc::try_unwrap(m).ok().unwrap();
    assert_eq!(*inner.get_mut().unwrap_err().into_inner(), 1);
    assert_eq!(inner.into_inner().unwrap_err().into_inner(), 1);
}

#[test]
fn guard_taken_while_panicking_does_not_poison() {
    struct LockOnDrop<'a>(&'a Mutex<i32>);
    impl Drop for LockOnDrop<'_> {
        fn drop(&mut self) {
            // std: a guard acquired during unwinding does not poison when dropped
            *self.0.lock().unwrap() += 1;
        }
    }
    let m = Mutex::new(0);
    let r = catch_unwind(AssertUnwindSafe(|| {
        let _d = LockOnDrop(&m);
        panic!("unwind");
    }));
    assert!(r.is_err());
    assert!(!m.is_poisoned());
    assert_eq!(*m.lock().unwrap(), 1);
}

#[test]
fn poisoned_try_lock_for_returns_guard() {
    let m = Arc::new(Mutex::new(3));
    poison(&m);
    match m.try_lock_for(Duration::from_millis(10)) {
        Err(TryLockError::Poisoned(e)) => assert_eq!(**e.get_ref(), 3),
        other => panic!("expected Poisoned, got {:?}", other.is_ok()),
    }
}

#[test]
fn unsized_data() {
    let m: Box<Mutex<[i32]>> = Box::new(Mutex::new([1, 2, 3]));
    m.lock().unwrap()[1] = 5;
    assert_eq!(&*m.lock().unwrap(), &[1, 5, 3]);
    let s: &Mutex<dyn std::fmt::Debug + Send> = &Mutex::new(7u8);
    assert_eq!(format!("{:?}", s.lock().unwrap()), "7");
}

#[test]
fn debug_display_default_from() {
    let m = Mutex::new(5);
    assert_eq!(format!("{m:?}"), "Mutex { data: 5, poisoned: false, .. }");
    let g = m.lock().unwrap();
    assert_eq!(
        format!("{m:?}"),
        "Mutex { data: <locked>, poisoned: false, .. }"
    );
    assert_eq!(format!("{g:?} {g}"), "5 5");
    drop(g);
    let m = Arc::new(m);
    poison(&m);
    assert_eq!(format!("{m:?}"), "Mutex { data: 5, poisoned: true, .. }");
    assert_eq!(
        *Mutex::<Vec<u8>>::default().lock().unwrap(),
        Vec::<u8>::new()
    );
    assert_eq!(*Mutex::from(9).lock().unwrap(), 9);
    assert_eq!(format!("{:?}", Condvar::default()), "Condvar { .. }");
}

#[test]
fn send_sync_bounds_match_std() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Mutex<std::cell::Cell<i32>>>(); // T: Send is enough, as std
    send_sync::<Condvar>();
    send_sync::<Mutex<Vec<i32>>>();
    fn sync<T: Sync>() {}
    sync::<MutexGuard<'static, i32>>(); // the guard is Sync for Sync T, as std

    // The guard must not be Send: this trait is ambiguous (a compile error) for Send types.
    trait AmbiguousIfSend<A> {
        fn check() {}
    }
    impl<T: ?Sized> AmbiguousIfSend<()> for T {}
    #[allow(dead_code)]
    struct Invalid;
    impl<T: ?Sized + Send> AmbiguousIfSend<Invalid> for T {}
    <MutexGuard<'static, i32> as AmbiguousIfSend<_>>::check();
    // And a Mutex of a !Send type is neither Send nor Sync.
    <Mutex<std::rc::Rc<i32>> as AmbiguousIfSend<_>>::check();
}

#[test]
fn unwind_safe_as_std() {
    fn unwind_safe<T: std::panic::UnwindSafe + std::panic::RefUnwindSafe>() {}
    unwind_safe::<Mutex<std::cell::Cell<i32>>>();
}

#[test]
fn self_deadlock_panics_with_message() {
    for p in POLICIES {
        let m = Mutex::with_policy(0, p);
        let r = catch_unwind(AssertUnwindSafe(|| {
            let _g = m.lock().unwrap();
            let _again = m.lock();
        }));
        let msg = r.unwrap_err();
        let msg = msg.downcast_ref::<String>().expect("string panic");
        assert!(msg.contains("already holds"), "{msg}");
        assert!(msg.contains(&current_tid().to_string()), "{msg}");
        // the outer guard unwound and unlocked (and poisoned, as any panic under a guard does)
        assert!(
            m.try_lock()
                .is_err_and(|e| matches!(e, TryLockError::Poisoned(_)))
        );
    }
}

#[test]
fn timed_lock_on_own_lock_returns_at_once() {
    let m = Mutex::new(0);
    let _g = m.lock().unwrap();
    let start = Instant::now();
    assert!(m.try_lock_for(Duration::from_secs(30)).is_err());
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn try_lock_for_and_until() {
    for p in POLICIES {
        let m = Arc::new(Mutex::with_policy(0, p));
        let g = m.lock().unwrap();
        let m2 = Arc::clone(&m);
        let t = thread::spawn(move || {
            let start = Instant::now();
            let r = m2.try_lock_for(Duration::from_millis(30));
            assert!(matches!(r, Err(TryLockError::WouldBlock)));
            assert!(start.elapsed() >= Duration::from_millis(30));
            // then succeed once the holder lets go
            let mut g = m2
                .try_lock_until(Instant::now() + Duration::from_secs(20))
                .unwrap();
            *g += 1;
        });
        thread::sleep(Duration::from_millis(60));
        drop(g);
        t.join().unwrap();
        assert_eq!(*m.lock().unwrap(), 1);
        // a huge timeout is "forever", not an overflow
        drop(m.try_lock_for(Duration::MAX).unwrap());
    }
}

#[test]
fn owner_and_blocked_on_are_visible() {
    for p in POLICIES {
        let m = Arc::new(Mutex::with_policy(0, p));
        assert_eq!(m.owner_tid(), None);
        let g = m.lock().unwrap();
        assert_eq!(m.owner_tid(), Some(current_tid()));
        let (tx, rx) = channel();
        let m2 = Arc::clone(&m);
        let t = thread::spawn(move || {
            tx.send(current_tid()).unwrap();
            *m2.lock().unwrap() += 1;
            assert_eq!(thread_blocked_on(current_tid()), None);
        });
        let waiter = rx.recv().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while thread_blocked_on(waiter) != Some(m.id()) {
            assert!(
                Instant::now() < deadline,
                "waiter never published blocked_on"
            );
            thread::sleep(Duration::from_millis(1));
        }
        // While it sleeps, the lock it sleeps on names us as owner.
        assert_eq!(m.owner_tid(), Some(current_tid()));
        drop(g);
        t.join().unwrap();
        assert_eq!(*m.lock().unwrap(), 1);
    }
}

#[test]
fn guard_forgotten_by_exiting_thread() {
    let m = Arc::new(Mutex::new(0));
    let m2 = Arc::clone(&m);
    let tid = thread::spawn(move || {
        std::mem::forget(m2.lock().unwrap());
        current_tid()
    })
    .join()
    .unwrap();
    // The lock stays held (as with std) and still names its dead owner, without a crash.
    assert!(matches!(m.try_lock(), Err(TryLockError::WouldBlock)));
    assert_eq!(m.owner_tid(), Some(tid));
    assert!(m.try_lock_for(Duration::from_millis(20)).is_err());
    assert_eq!(
        format!("{m:?}"),
        "Mutex { data: <locked>, poisoned: false, .. }"
    );
    // Other locks keep working for threads created afterwards (tids may be reused).
    let other = Arc::new(Mutex::new(0));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let o = Arc::clone(&other);
            thread::spawn(move || *o.lock().unwrap() += 1)
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    assert_eq!(*other.lock().unwrap(), 8);
}

static TLS_COUNTER: Mutex<u32> = Mutex::new(0);

struct LocksInDrop;
impl Drop for LocksInDrop {
    fn drop(&mut self) {
        *TLS_COUNTER.lock().unwrap() += 1;
        // and contended, with a condvar, while the thread is being torn down
        let g = TLS_COUNTER.lock().unwrap();
        let _ = Condvar::new()
            .wait_timeout(g, Duration::from_millis(1))
            .unwrap();
    }
}

thread_local! {
    static LOCK_ON_EXIT: LocksInDrop = const { LocksInDrop };
}

#[test]
fn lock_in_thread_local_destructor() {
    let before = *TLS_COUNTER.lock().unwrap();
    let handles: Vec<_> = (0..16)
        .map(|_| {
            thread::spawn(|| {
                // Use the crate first, so the record exists and could be torn down first.
                drop(TLS_COUNTER.lock().unwrap());
                LOCK_ON_EXIT.with(|_| {});
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(*TLS_COUNTER.lock().unwrap(), before + 16);
}

static KEY_COUNTER: Mutex<u32> = Mutex::new(0);

unsafe extern "C" fn lock_in_key_destructor(_: *mut libc::c_void) {
    *KEY_COUNTER.lock().unwrap() += 1;
}

#[test]
fn lock_in_pthread_key_destructor_after_record_is_gone() {
    // A pthread key created after the crate's own key runs its destructor after the crate has
    // retired the thread's record; locking there must still work.
    drop(KEY_COUNTER.lock().unwrap());
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: valid out-pointer and a C-ABI destructor.
    let rc = unsafe { libc::pthread_key_create(&mut key, Some(lock_in_key_destructor)) };
    assert_eq!(rc, 0);
    let handles: Vec<_> = (0..8)
        .map(|_| {
            thread::spawn(move || {
                drop(KEY_COUNTER.lock().unwrap());
                // SAFETY: the key is valid; any non-null value makes the destructor run.
                unsafe { libc::pthread_setspecific(key, std::ptr::dangling::<libc::c_void>()) };
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(*KEY_COUNTER.lock().unwrap(), 8);
}

#[test]
fn unlock_fair_and_bump() {
    for p in POLICIES {
        let m = Arc::new(Mutex::with_policy(Vec::new(), p));
        let mut g = m.lock().unwrap();
        let m2 = Arc::clone(&m);
        let t = thread::spawn(move || m2.lock().unwrap().push("waiter"));
        while !thread_waits(&m) {
            thread::yield_now();
        }
        // bump lets the waiter in and takes the lock back
        MutexGuard::bump(&mut g);
        assert_eq!(*g, vec!["waiter"]);
        g.push("holder");
        MutexGuard::unlock_fair(g);
        t.join().unwrap();
        assert_eq!(*m.lock().unwrap(), vec!["waiter", "holder"]);
    }
}

/// Whether some thread of this process is asleep on `m`: it published `blocked_on` (which
/// happens a little before it parks) and the kernel shows it sleeping.
fn thread_waits<T>(m: &Mutex<T>) -> bool {
    let dir = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .any(|tid: i32| thread_blocked_on(tid) == Some(m.id()) && sleeping(tid))
}

/// Whether the kernel shows thread `tid` of this process in an interruptible sleep.
fn sleeping(tid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    // The state follows the parenthesised command name, which may itself contain ") ".
    stat.rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('S'))
}

#[test]
fn condvar_wait_notify_one() {
    for p in POLICIES {
        let pair = Arc::new((Mutex::with_policy(0u32, p), Condvar::new()));
        let p2 = Arc::clone(&pair);
        let t = thread::spawn(move || {
            let (m, cv) = &*p2;
            for i in 1..=100 {
                let mut g = m.lock().unwrap();
                *g = i;
                cv.notify_one();
                while *g != 0 {
                    g = cv.wait(g).unwrap();
                }
            }
        });
        let (m, cv) = &*pair;
        let mut seen = 0;
        for _ in 0..100 {
            let mut g = cv.wait_while(m.lock().unwrap(), |v| *v == 0).unwrap();
            seen += 1;
            assert_eq!(*g, seen);
            *g = 0;
            cv.notify_one();
        }
        t.join().unwrap();
    }
}

type GoState = Arc<(Mutex<(bool, usize)>, Condvar)>;

/// `n` threads that wait until `go` is set, then count themselves.
fn spawn_go_waiters(state: &GoState, n: usize) -> Vec<thread::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let s = Arc::clone(state);
            thread::spawn(move || {
                let (m, cv) = &*s;
                let mut g = cv.wait_while(m.lock().unwrap(), |(go, _)| !*go).unwrap();
                g.1 += 1;
            })
        })
        .collect()
}

#[test]
fn condvar_notify_all_wakes_everyone() {
    for p in POLICIES {
        let state: GoState = Arc::new((Mutex::with_policy((false, 0usize), p), Condvar::new()));
        let handles = spawn_go_waiters(&state, 8);
        thread::sleep(Duration::from_millis(20));
        {
            let (m, cv) = &*state;
            m.lock().unwrap().0 = true;
            cv.notify_all(); // after unlock: wakes one, requeues the rest
        }
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(state.0.lock().unwrap().1, 8);

        // and notify_all while still holding the lock: requeues everyone
        state.0.lock().unwrap().0 = false;
        let handles = spawn_go_waiters(&state, 8);
        thread::sleep(Duration::from_millis(20));
        {
            let (m, cv) = &*state;
            let mut g = m.lock().unwrap();
            g.0 = true;
            cv.notify_all();
        }
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(state.0.lock().unwrap().1, 16);
    }
}

#[test]
fn condvar_timeouts() {
    let m = Mutex::new(0);
    let cv = Condvar::new();
    let start = Instant::now();
    let (g, r) = cv
        .wait_timeout(m.lock().unwrap(), Duration::from_millis(20))
        .unwrap();
    assert!(r.timed_out());
    assert!(start.elapsed() >= Duration::from_millis(20));
    drop(g);
    let (g, r) = cv
        .wait_timeout_while(m.lock().unwrap(), Duration::from_millis(20), |v| *v == 0)
        .unwrap();
    assert!(r.timed_out() && *g == 0);
    drop(g);
    // the condition already false: no wait, no timeout
    let (_g, r) = cv
        .wait_timeout_while(m.lock().unwrap(), Duration::from_secs(60), |v| *v != 0)
        .unwrap();
    assert!(!r.timed_out());
}

#[test]
#[allow(deprecated)]
fn condvar_wait_timeout_ms() {
    let m = Mutex::new(());
    let cv = Condvar::new();
    let (_g, notified) = cv.wait_timeout_ms(m.lock().unwrap(), 1).unwrap();
    assert!(!notified);
}

#[test]
fn condvar_notified_before_timeout() {
    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    let p2 = Arc::clone(&pair);
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        *p2.0.lock().unwrap() = true;
        p2.1.notify_one();
    });
    let (m, cv) = &*pair;
    let (g, r) = cv
        .wait_timeout_while(m.lock().unwrap(), Duration::from_secs(60), |v| !*v)
        .unwrap();
    assert!(*g && !r.timed_out());
    drop(g);
    t.join().unwrap();
}

#[test]
fn condvar_reports_poison() {
    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    let p2 = Arc::clone(&pair);
    let t = thread::spawn(move || {
        let (m, cv) = &*p2;
        let _g = m.lock().unwrap();
        cv.notify_one();
        panic!("poison while the waiter sleeps");
    });
    let (m, cv) = &*pair;
    let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
    // If the other thread has not run yet, it can only run while we wait, and then it poisons
    // the mutex before we get it back: the wait must report that.
    while !m.is_poisoned() {
        g = match cv.wait(g) {
            Ok(g) => {
                assert!(!m.is_poisoned(), "poisoned mutex returned as Ok");
                g
            }
            Err(e) => e.into_inner(),
        };
    }
    drop(g);
    assert!(t.join().is_err());
    assert!(m.is_poisoned());
    assert!(
        cv.wait_timeout(m.lock().unwrap_err().into_inner(), Duration::ZERO)
            .is_err()
    );
}

#[test]
fn condvar_with_two_mutexes_panics() {
    let cv = Arc::new(Condvar::new());
    let m1 = Arc::new(Mutex::new(()));
    let (cv2, m1b) = (Arc::clone(&cv), Arc::clone(&m1));
    let (tx, rx) = channel();
    let t = thread::spawn(move || {
        let g = m1b.lock().unwrap();
        tx.send(()).unwrap();
        let _ = cv2.wait_timeout(g, Duration::from_secs(2)).unwrap();
    });
    rx.recv().unwrap();
    // The first waiter is asleep on the condvar (with m1) once it released m1.
    drop(m1.lock().unwrap());
    let m2 = Mutex::new(());
    let r = catch_unwind(AssertUnwindSafe(|| {
        let _ = cv.wait(m2.lock().unwrap());
    }));
    let msg = r.unwrap_err();
    let msg = msg.downcast_ref::<&str>().copied().unwrap_or_default();
    assert!(msg.contains("more than one Mutex"), "{msg}");
    cv.notify_all();
    t.join().unwrap();
    // The panic unwound through m2's guard, so m2 is poisoned, as after any panic under a guard.
    assert!(m2.is_poisoned());
    m2.clear_poison();
    // Once nobody waits, the condvar may be used with another mutex.
    let (_g, r) = cv.wait_timeout(m2.lock().unwrap(), Duration::ZERO).unwrap();
    assert!(r.timed_out());
}

#[test]
fn lock_api_raw_mutex() {
    use proxy_lock::RawMutex;
    type LMutex<T> = lock_api::Mutex<RawMutex, T>;
    let m = Arc::new(LMutex::new(0));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let m = Arc::clone(&m);
            thread::spawn(move || {
                for i in 0..1000 {
                    match i % 3 {
                        0 => *m.lock() += 1,
                        1 => *m.try_lock_for(Duration::from_secs(60)).unwrap() += 1,
                        _ => {
                            let mut g = m.lock();
                            *g += 1;
                            lock_api::MutexGuard::unlock_fair(g);
                        }
                    }
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    assert_eq!(*m.lock(), 4000);
    assert!(!m.is_locked());
    let g = m.lock();
    assert!(m.is_locked() && m.try_lock().is_none());
    drop(g);
    let handoff = LMutex::from_raw(RawMutex::with_policy(Policy::Handoff), 1);
    assert_eq!(*handoff.lock(), 1);
}

#[test]
#[cfg(target_pointer_width = "64")]
fn layout_stays_small() {
    // Two words: the lock word (owner, flags, poison) and the spinner slot with the policy in
    // its low bits. Contended-only state lives elsewhere, found by the lock's address: sleepers
    // in the parking lot, sections published by `Mutex::run` in a table of stacks.
    assert_eq!(std::mem::size_of::<proxy_lock::RawMutex>(), 16);
    assert_eq!(std::mem::size_of::<Mutex<()>>(), 16);
    assert_eq!(std::mem::size_of::<Mutex<u64>>(), 24);
    // One word: the waiters' mutex, with their best rank's band in its low bits.
    assert_eq!(std::mem::size_of::<Condvar>(), 8);
    // As std's: the lock and one word, which holds the holder's record (so unlock needs no
    // thread-local lookup) and, in its low bit, whether the holder was panicking when it locked.
    assert_eq!(std::mem::size_of::<proxy_lock::MutexGuard<'_, ()>>(), 16);
    assert_eq!(
        std::mem::size_of::<Option<proxy_lock::MutexGuard<'_, ()>>>(),
        16
    );
}
