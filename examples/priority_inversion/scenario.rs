//! The inversions staged: who holds the lock, who preempts it, who waits, and how.

use crate::cgroup::Groups;
use crate::locks::DemoLock;
use crate::setup::{self, RenameDir, TraceStop};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

pub const HOG_BURST: Duration = Duration::from_millis(20);
const HOG_REST: Duration = Duration::from_millis(5);
const PERIOD: Duration = Duration::from_millis(1);
/// SCHED_FIFO priorities of the `rt` scenario: the foreground above the hog.
const FG_FIFO: i32 = 10;
const HOG_FIFO: i32 = 5;

/// Which inversion to stage.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scenario {
    /// A SCHED_IDLE owner on the hog's CPU; the foreground on the other CPU.
    Direct,
    /// The foreground waits on A; A's owner waits on B; B's owner is the one the hog preempts.
    /// Both owners are SCHED_IDLE on the hog's CPU, so donation must be transitive.
    Chain,
    /// The owner in a cgroup weighted 1, the hog in one weighted 128 (cgroup v1 cpu.shares 4
    /// and 512, the original demo's setup; v2 cpu.weight 1 and 128), the foreground outside
    /// both.
    Cgroup,
    /// A SCHED_FIFO foreground, a SCHED_OTHER owner, a lower-priority SCHED_FIFO hog: the case
    /// PI futexes were made for.
    Rt,
    /// Two SCHED_IDLE readers of an RwLock on the hog's CPU; the foreground writes.
    RwlockReaders,
    /// A SCHED_IDLE writer of an RwLock on the hog's CPU; the foreground reads.
    RwlockWriter,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::Direct,
        Scenario::Chain,
        Scenario::Cgroup,
        Scenario::Rt,
        Scenario::RwlockReaders,
        Scenario::RwlockWriter,
    ];

    /// Whether the scenario stages a reader-writer lock (`locks::RW_LOCKS`).
    pub fn is_rwlock(self) -> bool {
        matches!(self, Scenario::RwlockReaders | Scenario::RwlockWriter)
    }

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Direct => "direct",
            Scenario::Chain => "chain",
            Scenario::Cgroup => "cgroup",
            Scenario::Rt => "rt",
            Scenario::RwlockReaders => "rwlock-readers",
            Scenario::RwlockWriter => "rwlock-writer",
        }
    }

    pub fn describe(self) -> String {
        let burst = HOG_BURST.as_millis();
        match self {
            Scenario::Direct => format!(
                "SCHED_IDLE owner on CPU 0 beside a nice-0 hog ({burst} ms bursts); foreground on CPU 1 locks every 1 ms"
            ),
            Scenario::Chain => format!(
                "foreground -> A held by a SCHED_IDLE thread waiting on B -> B held by another, both on CPU 0 beside a nice-0 hog ({burst} ms bursts)"
            ),
            Scenario::Cgroup => format!(
                "owner in a cgroup weighted 1, hog ({burst} ms bursts) in one weighted 128 (v1 cpu.shares 4:512, v2 cpu.weight 1:128), both on CPU 0; foreground outside both on CPU 1"
            ),
            Scenario::Rt => format!(
                "SCHED_FIFO {FG_FIFO} foreground on CPU 1; SCHED_OTHER owner on CPU 0 beside a SCHED_FIFO {HOG_FIFO} hog ({burst} ms bursts)"
            ),
            Scenario::RwlockReaders => format!(
                "two SCHED_IDLE readers of an RwLock on CPU 0 beside a nice-0 hog ({burst} ms bursts); foreground on CPU 1 writes every 1 ms"
            ),
            Scenario::RwlockWriter => format!(
                "SCHED_IDLE writer of an RwLock on CPU 0 beside a nice-0 hog ({burst} ms bursts); foreground on CPU 1 reads every 1 ms"
            ),
        }
    }

    /// What the machine must allow, checked before any run: `Err` says why not.
    pub fn prepare(self) -> Result<Option<Arc<Groups>>, String> {
        match self {
            Scenario::Direct
            | Scenario::Chain
            | Scenario::RwlockReaders
            | Scenario::RwlockWriter => Ok(None),
            Scenario::Cgroup => Groups::create().map(|g| Some(Arc::new(g))),
            Scenario::Rt => setup::can_use_fifo().map(|()| None),
        }
    }
}

/// The background owners' critical section.
#[derive(Clone)]
pub enum Section {
    /// Busy for this long.
    Cpu(Duration),
    /// Rename a file and back, as the original demo does.
    Rename(Arc<RenameDir>),
}

impl Section {
    pub fn run(&self) {
        match self {
            Section::Cpu(d) => busy(*d),
            Section::Rename(r) => {
                std::fs::rename(&r.a, &r.b).expect("rename");
                std::fs::rename(&r.b, &r.a).expect("rename back");
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Section::Cpu(d) => format!("{} µs of CPU work", d.as_micros()),
            Section::Rename(_) => "a file renamed and back".into(),
        }
    }
}

fn busy(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

/// Everything a run needs besides the lock type.
#[derive(Clone)]
pub struct Stage {
    pub scenario: Scenario,
    pub pinned: bool,
    pub section: Section,
    pub groups: Option<Arc<Groups>>,
    pub seconds: f64,
}

/// The roles threads play, and the attributes each one takes.
#[derive(Clone, Copy)]
enum Role {
    Owner,
    Hog,
    Foreground,
}

impl Stage {
    /// Gives the calling thread its role's CPU, warms it up (`warm_up`), then gives it its
    /// policy and group. A failure is printed, not fatal: `prepare` already checked what the
    /// scenario needs.
    fn become_(&self, role: Role) {
        let report = |r: Result<(), String>| {
            if let Err(e) = r {
                eprintln!("warning: {}: {e}", self.scenario.name());
            }
        };
        if self.pinned {
            report(setup::pin(if matches!(role, Role::Foreground) {
                1
            } else {
                0
            }));
        }
        warm_up();
        match (self.scenario, role) {
            (
                Scenario::Direct
                | Scenario::Chain
                | Scenario::RwlockReaders
                | Scenario::RwlockWriter,
                Role::Owner,
            ) => report(setup::set_policy(libc::SCHED_IDLE, 0)),
            (Scenario::Cgroup, Role::Owner) => {
                let groups = self.groups.as_ref().unwrap();
                report(groups.join(&groups.background, setup::gettid()))
            }
            (Scenario::Cgroup, Role::Hog) => {
                let groups = self.groups.as_ref().unwrap();
                report(groups.join(&groups.hogs, setup::gettid()))
            }
            (Scenario::Rt, Role::Hog) => report(setup::set_policy(libc::SCHED_FIFO, HOG_FIFO)),
            (Scenario::Rt, Role::Foreground) => {
                report(setup::set_policy(libc::SCHED_FIFO, FG_FIFO))
            }
            _ => {}
        }
    }

    /// Stages the scenario with lock type `L` and returns the foreground's waits, sorted. With
    /// `trace_stop`, each wait is also checked against its threshold, under the lock's name.
    pub fn run<L: DemoLock>(
        &self,
        trace_stop: Option<(Arc<TraceStop>, &'static str)>,
    ) -> Vec<Duration> {
        let (a, b) = (Arc::new(L::new()), Arc::new(L::new()));
        let stop = Arc::new(AtomicBool::new(false));
        // Every thread takes its role before the foreground's first wait: the owners, the hog
        // and the foreground itself. The measurement is of the staged inversion, not of threads
        // still starting: without this, the foreground's first waits raced the others' pinning,
        // warm-up and policy changes, and a short run measured mostly that start-up.
        let owners = match self.scenario {
            Scenario::Chain | Scenario::RwlockReaders => 2,
            _ => 1,
        };
        let ready = Arc::new(Barrier::new(owners + 2));
        let mut threads = Vec::new();
        let section = self.section.clone();
        if self.scenario == Scenario::Chain {
            // The middle owner holds A while it waits for B.
            let (a, b1, s) = (a.clone(), b.clone(), section.clone());
            threads.push(self.owner(&stop, &ready, move || {
                a.hold(|| b1.hold(|| s.run()));
                busy(Duration::from_micros(100));
            }));
            let (b, s) = (b.clone(), section.clone());
            threads.push(self.owner(&stop, &ready, move || {
                b.hold(|| s.run());
                busy(Duration::from_micros(100));
            }));
        } else {
            // One owner, or two readers whose holds overlap (`rwlock-readers`).
            for _ in 0..owners {
                let (a, s) = (a.clone(), section.clone());
                threads.push(self.owner(&stop, &ready, move || {
                    a.hold_background(|| s.run());
                    busy(Duration::from_micros(100));
                }));
            }
        }
        let (stage, s, r) = (self.clone(), stop.clone(), ready.clone());
        threads.push(std::thread::spawn(move || {
            stage.become_(Role::Hog);
            r.wait();
            while !s.load(Ordering::Relaxed) {
                busy(HOG_BURST);
                std::thread::sleep(HOG_REST);
            }
        }));
        let (stage, l, s) = (self.clone(), a.clone(), stop.clone());
        let foreground = std::thread::spawn(move || {
            stage.become_(Role::Foreground);
            ready.wait();
            let mut waits = Vec::new();
            let end = Instant::now() + Duration::from_secs_f64(stage.seconds);
            let mut next = Instant::now();
            while Instant::now() < end {
                let t0 = Instant::now();
                // Under `run` this may execute on the owner's thread: it records when the
                // section got the lock, wherever that was.
                l.hold(|| {
                    let wait = t0.elapsed();
                    if let Some((t, lock)) = &trace_stop {
                        t.check(wait, lock);
                    }
                    waits.push(wait)
                });
                next += PERIOD;
                if let Some(d) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
            }
            s.store(true, Ordering::Relaxed);
            waits
        });
        let mut waits = foreground.join().unwrap();
        for t in threads {
            t.join().unwrap();
        }
        waits.sort();
        waits
    }

    /// A background owner running `body` until stopped.
    fn owner(
        &self,
        stop: &Arc<AtomicBool>,
        ready: &Arc<Barrier>,
        body: impl Fn() + Send + 'static,
    ) -> std::thread::JoinHandle<()> {
        let (stage, stop, ready) = (self.clone(), stop.clone(), ready.clone());
        std::thread::spawn(move || {
            stage.become_(Role::Owner);
            ready.wait();
            while !stop.load(Ordering::Relaxed) {
                body();
            }
        })
    }
}

/// Sets up proxy-lock's per-thread state (task record, parking and epoch registration, request
/// slot) before the measurement, in every thread and for every lock alike, after the thread is
/// pinned and before it takes its policy. A thread's first blocking lock otherwise goes
/// through first-use paths that take process-wide locks, and a SCHED_IDLE thread preempted
/// inside one while starting up made one of the foreground's first waits last a whole hog
/// burst (docs/design.md, "What no lock can lend around"). Warming up before pinning instead left such a
/// 12-20 ms first wait in 3 of 4 runs of `direct`; after pinning, none in 5.
fn warm_up() {
    let m = proxy_lock::Mutex::new(());
    let cv = proxy_lock::Condvar::new();
    let _ = cv.wait_timeout(m.lock().unwrap(), Duration::from_micros(1));
    let _ = m.owner_tid();
    let _ = m.run(|_| ());
    let rw = proxy_lock::RwLock::new(());
    drop(rw.read());
    drop(rw.write());
}
