//! A locktorture analog, sized for CI: writers at mixed policies and nice levels (one of them
//! boosting itself to SCHED_FIFO and back now and then) take up to 8 nested locks in a
//! consistent order, with guards and with `Mutex::run`, under all three policies; they hold
//! long now and then, sleep at random, use a Condvar with timeouts, read and write an `RwLock`
//! (timed reads, downgrades, panics while writing), panic inside sections; a
//! side thread keeps spawning threads that exit holding a forgotten guard, some of them while
//! boosted; another keeps spawning batches of short threads that each take one of the locks
//! and exit (thread churn, half of them at nice 15 so that they are lent to); a third forks
//! now and then, and each child uses proxy-lock (or execs) while the parent's threads go on
//! lending. Invariants are checked all the time:
//!
//! * no two holders: each lock has a holder counter, raised and lowered inside every section;
//!   the `RwLock` counts its readers and writers, and no reader sees a half-made write;
//! * no lost wake-up: a watchdog fails the run if a writer waits past a generous bound, and
//!   prints the blocked_on chains;
//! * no deadlock report: the lock order is consistent, so any panic other than the injected
//!   ones fails the run;
//! * every writer ends at its base attributes, read back from `/proc`;
//! * every forked child finishes its part (none hangs on state a parent thread held at the
//!   fork), and the forking thread keeps its own attributes after each child;
//! * the counters are plausible: donations, restores, sections run by proxy and handoffs all
//!   happened, and (with CAP_SYS_NICE) no write failed for lack of privilege.
//!
//! `TORTURE_SECS` sets the length (default 20 s; `.ci/run` uses 120; see docs/testing.md for a
//! release run). The summary follows locktorture's: acquisitions per writer with max/min, a
//! `???` starvation flag when max > 2x min (a flag, not a failure: a SCHED_IDLE writer on a
//! busy machine gets fewer turns by design), failures, then `End of test: SUCCESS` or
//! `FAILURE`.

mod common;

use common::{cpus_of, fork_and_wait, sched_of, set_nice, set_policy};
use proxy_lock::{
    Condvar, Mutex, Policy, RwLock, RwLockWriteGuard, capabilities, counters, current_tid,
};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const LOCKS: usize = 8;
const POLICIES: [Policy; 3] = [Policy::Spin, Policy::Handoff, Policy::Adaptive];
/// A wait longer than this is a lost wake-up (or a donation that never landed). Generous:
/// SCHED_IDLE writers on 2 busy CPUs, long holds, and sleeps inside sections.
const STUCK_AFTER: Duration = Duration::from_secs(10);
const INJECTED: &str = "torture: injected panic";

#[path = "../benches/workloads/churn.rs"]
#[allow(dead_code)] // only its loan round is used here
mod churn;

/// What a writer is: how it sets itself up, and whether it boosts itself to SCHED_FIFO now and
/// then (locktorture's `rt_boost`).
#[derive(Clone, Copy)]
struct Role {
    name: &'static str,
    policy: i32,
    nice: i32,
    rt_boost: bool,
}

const fn role(name: &'static str, policy: i32, nice: i32, rt_boost: bool) -> Role {
    Role {
        name,
        policy,
        nice,
        rt_boost,
    }
}

const ROLES: [Role; 8] = [
    role("nice0", libc::SCHED_OTHER, 0, false),
    role("nice10", libc::SCHED_OTHER, 10, false),
    role("nice19", libc::SCHED_OTHER, 19, false),
    role("idle", libc::SCHED_IDLE, 0, false),
    role("batch5", libc::SCHED_BATCH, 5, false),
    role("rt-boost", libc::SCHED_OTHER, 0, true),
    role("nice-5", libc::SCHED_OTHER, -5, false),
    role("nice5", libc::SCHED_OTHER, 5, false),
];

/// One lock under test: the data, and a holder counter that only the holder touches.
struct Lock {
    data: Mutex<u64>,
    holders: AtomicUsize,
}

/// Raises a lock's holder counter for as long as it lives, and records a failure if someone
/// else was inside. Lowered on drop, so an injected panic unwinds it too.
struct Inside<'a>(&'a Lock, &'a Shared);

impl<'a> Inside<'a> {
    fn enter(lock: &'a Lock, shared: &'a Shared) -> Inside<'a> {
        let before = lock.holders.fetch_add(1, SeqCst);
        if before != 0 {
            shared.fail(format!("{before} other holder(s) inside a section"));
        }
        Inside(lock, shared)
    }
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        if self.0.holders.fetch_sub(1, SeqCst) != 1 {
            self.1
                .fail("holder counter changed under the holder".into());
        }
    }
}

/// The `RwLock` under test: two counters a writer raises together, and who is inside.
struct Table {
    lock: RwLock<(u64, u64)>,
    readers: AtomicUsize,
    writers: AtomicUsize,
}

/// Counts one thread inside the table (`writer`: exclusively) for as long as it lives, and
/// records a failure if that breaks the rwlock's rule. Lowered on drop, so an injected panic
/// unwinds it too.
struct InTable<'a> {
    shared: &'a Shared,
    writer: bool,
}

impl<'a> InTable<'a> {
    fn enter(shared: &'a Shared, writer: bool) -> InTable<'a> {
        let t = &shared.table;
        let (mine, theirs) = if writer {
            (&t.writers, &t.readers)
        } else {
            (&t.readers, &t.writers)
        };
        let before = mine.fetch_add(1, SeqCst);
        let others = theirs.load(SeqCst);
        if others != 0 || (writer && before != 0) {
            shared.fail(format!(
                "rwlock: a {} entered beside {before} of its kind and {others} of the other",
                if writer { "writer" } else { "reader" }
            ));
        }
        InTable { shared, writer }
    }
}

impl Drop for InTable<'_> {
    fn drop(&mut self) {
        let t = &self.shared.table;
        if self.writer { &t.writers } else { &t.readers }.fetch_sub(1, SeqCst);
    }
}

struct Shared {
    locks: Vec<Lock>,
    mailbox: (Mutex<u64>, Condvar),
    table: Table,
    start: Instant,
    stop: AtomicBool,
    failures: AtomicUsize,
    first_failure: std::sync::Mutex<Option<String>>,
    /// Per writer: µs since `start` when its current wait began, 0 if not waiting.
    waiting_since: Vec<AtomicU64>,
    max_wait_us: AtomicU64,
    acquisitions: Vec<AtomicU64>,
    timeouts: AtomicU64,
    injected: AtomicU64,
    exits: AtomicU64,
    churned: AtomicU64,
    forks: AtomicU64,
    /// Times the forking thread was found lent to right after a child (see `forker`).
    forker_rescued: AtomicU64,
    /// Held (read) by the threads that start and end threads during the run, and (write) by
    /// the forker across each fork: std's thread start and exit take a process-wide lock of
    /// std's, and a child forked while another thread held it hangs in `thread::spawn`.
    spawning: std::sync::RwLock<()>,
}

impl Shared {
    fn fail(&self, why: String) {
        self.failures.fetch_add(1, SeqCst);
        eprintln!("torture failure: {why}");
        self.first_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(why);
    }

    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64 + 1
    }

    /// Times one acquisition of writer `w`: marks it waiting for the watchdog.
    fn waiting<R>(&self, w: usize, f: impl FnOnce() -> R) -> R {
        let t0 = self.now_us();
        self.waiting_since[w].store(t0, SeqCst);
        let r = f();
        self.waiting_since[w].store(0, SeqCst);
        self.max_wait_us.fetch_max(self.now_us() - t0, SeqCst);
        self.acquisitions[w].fetch_add(1, SeqCst);
        r
    }
}

/// xorshift64: reproducible per writer, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seconds() -> f64 {
    std::env::var("TORTURE_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(20.0)
}

/// The section every writer runs under its innermost lock: check exclusion, count, and now and
/// then hold long or panic.
fn section(lock: &Lock, data: &mut u64, shared: &Shared, rng: &mut Rng) {
    let _inside = Inside::enter(lock, shared);
    *data += 1;
    match rng.below(1000) {
        0..=4 => thread::sleep(Duration::from_millis(2)),
        5 => {
            shared.injected.fetch_add(1, SeqCst);
            panic!("{INJECTED}");
        }
        _ => {}
    }
}

/// Takes locks `from..to` in order with guards (some of them timed), then runs `innermost` on
/// the last one, by guard or by `Mutex::run`.
fn nested(w: usize, shared: &Shared, rng: &mut Rng, from: usize, to: usize) {
    let mut guards = Vec::new();
    for i in from..to - 1 {
        let lock = &shared.locks[i];
        let timed = rng.below(4) == 0;
        let guard = shared.waiting(w, || {
            if timed {
                match lock.data.try_lock_for(Duration::from_micros(500)) {
                    Ok(g) => Some(g),
                    Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                    Err(std::sync::TryLockError::WouldBlock) => None,
                }
            } else {
                Some(lock.data.lock().unwrap_or_else(|p| p.into_inner()))
            }
        });
        match guard {
            Some(g) => guards.push((Inside::enter(lock, shared), g)),
            None => {
                shared.timeouts.fetch_add(1, SeqCst);
                return;
            }
        }
    }
    let last = &shared.locks[to - 1];
    if rng.below(3) == 0 {
        let mut seed = Rng(rng.next() | 1);
        let _ = shared.waiting(w, || {
            last.data
                .run(move |data| section(last, data, shared, &mut seed))
        });
    } else {
        let mut g = shared.waiting(w, || last.data.lock().unwrap_or_else(|p| p.into_inner()));
        section(last, &mut g, shared, rng);
    }
    // Guards drop innermost first, each after its holder mark.
    while let Some((inside, guard)) = guards.pop() {
        drop(inside);
        drop(guard);
    }
}

/// RwLock traffic on the table: mostly reads (some timed), some writes (some downgraded, a
/// few panicking after a complete write, which poisons it).
fn table(w: usize, shared: &Shared, rng: &mut Rng) {
    let lock = &shared.table.lock;
    let check = |v: &(u64, u64)| {
        if v.0 != v.1 {
            shared.fail(format!("rwlock: a reader saw a half-made write {v:?}"));
        }
    };
    match rng.below(10) {
        0..=5 => {
            let r = shared.waiting(w, || lock.read().unwrap_or_else(|p| p.into_inner()));
            let _in = InTable::enter(shared, false);
            check(&r);
            if rng.below(20) == 0 {
                thread::sleep(Duration::from_micros(rng.below(300)));
            }
        }
        6 => {
            let timeout = Duration::from_micros(rng.below(200));
            match lock.try_read_for(timeout) {
                Ok(r) => check(&r),
                Err(std::sync::TryLockError::Poisoned(p)) => check(&p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => {
                    shared.timeouts.fetch_add(1, SeqCst);
                }
            }
        }
        _ => {
            let mut g = shared.waiting(w, || lock.write().unwrap_or_else(|p| p.into_inner()));
            let inside = InTable::enter(shared, true);
            g.0 += 1;
            g.1 += 1;
            match rng.below(100) {
                0 => {
                    shared.injected.fetch_add(1, SeqCst);
                    panic!("{INJECTED}");
                }
                1..=30 => {
                    drop(inside);
                    let r = RwLockWriteGuard::downgrade(g);
                    let _in = InTable::enter(shared, false);
                    check(&r);
                }
                _ => {}
            }
        }
    }
}

/// Condvar traffic on the mailbox: post and notify, or wait (with a timeout) for a post.
fn mailbox(w: usize, shared: &Shared, rng: &mut Rng) {
    let (m, cv) = &shared.mailbox;
    let mut g = shared.waiting(w, || m.lock().unwrap_or_else(|p| p.into_inner()));
    if rng.below(2) == 0 {
        *g += 1;
        if rng.below(2) == 0 {
            cv.notify_one();
        } else {
            cv.notify_all();
        }
    } else {
        let seen = *g;
        let timeout = Duration::from_micros(100 + rng.below(2000));
        let (g2, _) = cv
            .wait_timeout_while(g, timeout, |v| *v == seen)
            .unwrap_or_else(|p| p.into_inner());
        g = g2;
    }
    drop(g);
}

fn set_self(role: &Role) {
    set_policy(current_tid(), role.policy, 0);
    if role.policy != libc::SCHED_IDLE {
        set_nice(role.nice);
    }
}

/// What `sched_of` and `cpus_of` say about the calling thread.
fn own_attrs() -> ((i32, i32, u32), Vec<u32>) {
    let tid = current_tid();
    (sched_of(tid), cpus_of(tid))
}

fn writer(w: usize, shared: Arc<Shared>, privileged: bool, done: Arc<Barrier>) {
    let role = ROLES[w % ROLES.len()];
    if privileged {
        set_self(&role);
    }
    let base = own_attrs();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((w as u64 + 1) * 0x1000_0001));
    let mut boosted_until: Option<Instant> = None;
    while !shared.stop.load(SeqCst) {
        if privileged && role.rt_boost {
            rt_boost(&role, &mut boosted_until, &mut rng);
        }
        let result = catch_unwind(AssertUnwindSafe(|| match rng.below(100) {
            0..=79 => {
                let from = rng.below(LOCKS as u64) as usize;
                let depth = 1 + rng.below((LOCKS - from) as u64) as usize;
                nested(w, &shared, &mut rng, from, from + depth);
            }
            80..=87 => mailbox(w, &shared, &mut rng),
            88..=94 => table(w, &shared, &mut rng),
            _ => thread::sleep(Duration::from_micros(rng.below(500))),
        }));
        if let Err(payload) = result {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            if msg != INJECTED {
                shared.fail(format!("writer {w} ({}) panicked: {msg}", role.name));
            }
            for lock in &shared.locks {
                lock.data.clear_poison();
            }
            shared.table.lock.clear_poison();
        }
    }
    if privileged && role.rt_boost {
        set_self(&role);
    }
    // Every writer has stopped locking before anyone reads its attributes back: a restore may
    // be made by whichever thread reconciles last.
    done.wait();
    let end = own_attrs();
    if end != base {
        shared.fail(format!(
            "writer {w} ({}) ended at {end:?}, not at its base {base:?}",
            role.name
        ));
    }
}

/// The `rt-boost` writer: every ~50 ms, 5 ms at SCHED_FIFO 1, then back to its base.
fn rt_boost(role: &Role, until: &mut Option<Instant>, rng: &mut Rng) {
    let now = Instant::now();
    match *until {
        Some(t) if now >= t => {
            set_self(role);
            *until = None;
        }
        None if rng.below(50) == 0 => {
            set_policy(current_tid(), libc::SCHED_FIFO, 1);
            *until = Some(now + Duration::from_millis(5));
        }
        _ => {}
    }
}

/// Keeps spawning short-lived threads that exit holding a forgotten guard: half of them while
/// a better thread waits on that lock with a timeout (so they exit boosted, when privileged).
fn exiter(shared: Arc<Shared>, privileged: bool) {
    let mut rng = Rng(0xDEAD_BEEF);
    while !shared.stop.load(SeqCst) {
        let spawning = shared.spawning.read().unwrap_or_else(|e| e.into_inner());
        let lock = Arc::new(Mutex::new(0u32));
        let (taken_tx, taken_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let l = lock.clone();
        let child = thread::spawn(move || {
            if privileged {
                set_nice(10);
            }
            let g = l.lock().unwrap();
            taken_tx.send(()).unwrap();
            let _ = go_rx.recv_timeout(Duration::from_millis(20));
            std::mem::forget(g);
        });
        taken_rx.recv().unwrap();
        if rng.below(2) == 0 {
            // Lends to the child (nice 10) while it holds the lock, and it exits boosted.
            let waiter = thread::spawn({
                let lock = lock.clone();
                move || lock.try_lock_for(Duration::from_millis(5)).is_err()
            });
            if !waiter.join().unwrap() {
                shared.fail("a lock held by a forgotten guard was taken".into());
            }
        }
        drop(go_tx);
        child.join().unwrap();
        if lock.try_lock().is_ok() {
            shared.fail("a lock whose holder exited holding it was free".into());
        }
        drop(spawning);
        shared.exits.fetch_add(1, SeqCst);
        thread::sleep(Duration::from_millis(10));
    }
}

/// Thread churn: batches of 8 short threads, each taking one lock (by guard or by
/// `Mutex::run`) and exiting; in every other batch they run at nice 15, so the writers lend to
/// them and some exit just after a loan ended.
fn churner(shared: Arc<Shared>, privileged: bool) {
    let mut batch = 0u64;
    while !shared.stop.load(SeqCst) {
        batch += 1;
        let lowly = privileged && batch.is_multiple_of(2);
        let _spawning = shared.spawning.read().unwrap_or_else(|e| e.into_inner());
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let shared = shared.clone();
                thread::spawn(move || {
                    if lowly {
                        set_nice(15);
                    }
                    let lock = &shared.locks[((batch * 8 + t) % LOCKS as u64) as usize];
                    let enter = |data: &mut u64| {
                        let _inside = Inside::enter(lock, &shared);
                        *data += 1;
                    };
                    if t % 2 == 0 {
                        let _ = lock.data.run(enter);
                    } else {
                        enter(&mut lock.data.lock().unwrap_or_else(|p| p.into_inner()));
                    }
                })
            })
            .collect();
        for t in threads {
            if t.join().is_err() {
                shared.fail("a churn thread died".into());
            }
        }
        shared.churned.fetch_add(8, SeqCst);
    }
}

/// Forks every ~20 ms while the writers lend to each other. Each child checks that its tid is
/// its own, runs a loan round of its own (a nice-0 waiter lending to a nice-19 owner), and
/// (every 8th child execs `/bin/true` instead) takes a fresh lock by guard and by
/// `Mutex::run` and tries every torture lock: one a parent thread held at the fork stays held,
/// one that was free is taken and released. A child that fails or does not finish within
/// 10 s, or a lasting change to the forking thread's attributes, fails the run.
fn forker(shared: Arc<Shared>, privileged: bool) {
    if privileged {
        set_nice(3);
    }
    let base = own_attrs();
    let parent_tid = current_tid();
    let mut n = 0u64;
    while !shared.stop.load(SeqCst) {
        n += 1;
        let quiet = shared.spawning.write().unwrap_or_else(|e| e.into_inner());
        let code = fork_and_wait(Duration::from_secs(10), || {
            // SAFETY: gettid takes no arguments and cannot fail.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) as i32 };
            if current_tid() != tid || tid == parent_tid {
                return 2;
            }
            if privileged {
                // A loan inside the child, at nice 0: it must land on the child's own thread.
                set_nice(0);
                churn::loan_round();
            }
            if n.is_multiple_of(8) {
                let path = c"/bin/true";
                let argv = [path.as_ptr(), std::ptr::null()];
                // SAFETY: a NUL-terminated path and argv; on success it does not return.
                unsafe { libc::execv(path.as_ptr(), argv.as_ptr()) };
                return 5;
            }
            let fresh = Mutex::with_policy(0u32, Policy::Handoff);
            *fresh.lock().unwrap() += 1;
            if fresh.run(|v| *v + 1).unwrap() != 2 {
                return 3;
            }
            for lock in &shared.locks {
                drop(lock.data.try_lock());
            }
            0
        });
        drop(quiet);
        match code {
            Some(0) => {}
            Some(c) => shared.fail(format!("forked child {n} failed with exit code {c}")),
            None => shared.fail(format!("forked child {n} hung")),
        }
        // The forking thread holds the ledger lock across `fork()`, so a writer that waits for
        // it may rescue it (lend it its attributes) until that writer takes the lock and puts
        // it back. What must never happen is a change that stays: the child writing to it.
        if own_attrs() != base {
            shared.forker_rescued.fetch_add(1, SeqCst);
            let settled = Instant::now() + Duration::from_secs(2);
            while own_attrs() != base && Instant::now() < settled {
                thread::sleep(Duration::from_millis(1));
            }
            let now = own_attrs();
            if now != base {
                shared.fail(format!(
                    "after forked child {n}, the forking thread stayed at {now:?}, not {base:?}"
                ));
            }
        }
        shared.forks.fetch_add(1, SeqCst);
        thread::sleep(Duration::from_millis(20));
    }
}

/// Fails the run if any writer waits longer than `STUCK_AFTER`, printing the chains.
fn watchdog(shared: Arc<Shared>) {
    let mut reported = vec![false; shared.waiting_since.len()];
    while !shared.stop.load(SeqCst) {
        thread::sleep(Duration::from_millis(50));
        let now = shared.now_us();
        for (w, since) in shared.waiting_since.iter().enumerate() {
            // A wait that began after `now` was read is a fresh one, not a long one (without
            // the saturation it wrapped to 18 million seconds and failed a slow run).
            let t = since.load(SeqCst);
            let waited = now.saturating_sub(t);
            if t != 0 && waited > STUCK_AFTER.as_micros() as u64 && !reported[w] {
                reported[w] = true;
                shared.fail(format!(
                    "writer {w} waiting for {:.1} s; chains:\n{}",
                    waited as f64 / 1e6,
                    proxy_lock::snapshot()
                ));
            }
        }
    }
}

#[test]
fn torture() {
    let secs = seconds();
    let caps = capabilities();
    let privileged = caps.cap_sys_nice;
    if !privileged {
        eprintln!(
            "torture: no CAP_SYS_NICE: writers keep default attributes, no rt_boost ({caps})"
        );
    }
    let writers = ROLES.len();
    let shared = Arc::new(Shared {
        locks: (0..LOCKS)
            .map(|i| Lock {
                data: Mutex::with_policy(0, POLICIES[i % 3]),
                holders: AtomicUsize::new(0),
            })
            .collect(),
        mailbox: (Mutex::new(0), Condvar::new()),
        table: Table {
            lock: RwLock::new((0, 0)),
            readers: AtomicUsize::new(0),
            writers: AtomicUsize::new(0),
        },
        start: Instant::now(),
        stop: AtomicBool::new(false),
        failures: AtomicUsize::new(0),
        first_failure: std::sync::Mutex::new(None),
        waiting_since: (0..writers).map(|_| AtomicU64::new(0)).collect(),
        max_wait_us: AtomicU64::new(0),
        acquisitions: (0..writers).map(|_| AtomicU64::new(0)).collect(),
        timeouts: AtomicU64::new(0),
        injected: AtomicU64::new(0),
        exits: AtomicU64::new(0),
        churned: AtomicU64::new(0),
        forks: AtomicU64::new(0),
        forker_rescued: AtomicU64::new(0),
        spawning: std::sync::RwLock::new(()),
    });
    // Injected panics are expected: keep their messages out of the log.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let injected =
            info.payload().downcast_ref::<String>().map(String::as_str) == Some(INJECTED);
        if !injected {
            default_hook(info);
        }
    }));
    let before = counters();
    let done = Arc::new(Barrier::new(writers));
    let mut threads: Vec<_> = (0..writers)
        .map(|w| {
            let (s, d) = (shared.clone(), done.clone());
            thread::Builder::new()
                .name(format!("writer-{w}"))
                .spawn(move || writer(w, s, privileged, d))
                .unwrap()
        })
        .collect();
    threads.push(thread::spawn({
        let s = shared.clone();
        move || exiter(s, privileged)
    }));
    threads.push(thread::spawn({
        let s = shared.clone();
        move || churner(s, privileged)
    }));
    let dog = thread::spawn({
        let s = shared.clone();
        move || watchdog(s)
    });
    // Started last and stopped first: no thread of the run starts or ends outside
    // `Shared::spawning` while it forks.
    let forker = thread::spawn({
        let s = shared.clone();
        move || forker(s, privileged)
    });
    thread::sleep(Duration::from_secs_f64(secs));
    shared.stop.store(true, SeqCst);
    threads.insert(0, forker);
    for t in threads {
        if t.join().is_err() {
            shared.fail("a torture thread died".into());
        }
    }
    dog.join().unwrap();
    let _ = std::panic::take_hook();
    let c = counters();
    let got = |f: fn(&proxy_lock::Counters) -> u64| f(&c) - f(&before);
    let donations = got(|c| c.donations);
    let restores = got(|c| c.restores);
    let proxied = got(|c| c.proxied);
    let handoffs = got(|c| c.handoffs);
    let failed_permission = got(|c| c.failed_permission);
    let (churned, forks) = (shared.churned.load(SeqCst), shared.forks.load(SeqCst));
    if churned == 0 || forks == 0 {
        shared.fail(format!(
            "the side threads did not run: churned {churned}, forked {forks}"
        ));
    }
    if proxied == 0 || handoffs == 0 {
        shared.fail(format!(
            "implausible counters: proxied {proxied}, handoffs {handoffs}"
        ));
    }
    if privileged && (donations == 0 || restores == 0 || failed_permission != 0) {
        shared.fail(format!(
            "implausible donation counters: donations {donations}, restores {restores}, \
             permission failures {failed_permission}"
        ));
    }
    let (a, b) = *shared.table.lock.read().unwrap_or_else(|p| p.into_inner());
    if a != b || a == 0 {
        shared.fail(format!("rwlock: the table ended at ({a}, {b})"));
    }
    let counts: Vec<u64> = shared.acquisitions.iter().map(|a| a.load(SeqCst)).collect();
    let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
    let total: u64 = counts.iter().sum();
    let failures = shared.failures.load(SeqCst);
    println!("torture: {secs} s, {writers} writers, {LOCKS} locks (Spin/Handoff/Adaptive)");
    for (w, n) in counts.iter().enumerate() {
        println!("  writer {w} ({:>8}): {n} acquisitions", ROLES[w].name);
    }
    println!(
        "Writes: Total: {total} Max/Min: {max}/{min} {} Fail: {failures} {}",
        if max > 2 * min { "???" } else { "" },
        if failures != 0 { "!!!" } else { "" }
    );
    println!(
        "donations {donations}, restores {restores}, proxied {proxied}, handoffs {handoffs}, \
         timeouts {}, injected panics {}, exited holding a guard {}, churned threads {}, \
         forked children {} (forker lent to for a while after {}), rwlock writes {a}, max wait \
         {:.2} ms",
        shared.timeouts.load(SeqCst),
        shared.injected.load(SeqCst),
        shared.exits.load(SeqCst),
        churned,
        forks,
        shared.forker_rescued.load(SeqCst),
        shared.max_wait_us.load(SeqCst) as f64 / 1000.0
    );
    println!("counters: {}", c);
    let first = shared.first_failure.lock().unwrap().clone();
    if failures == 0 {
        println!("End of test: SUCCESS");
    } else {
        println!("End of test: FAILURE");
        panic!(
            "{failures} failure(s); first: {}",
            first.unwrap_or_default()
        );
    }
}
