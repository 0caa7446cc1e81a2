//! The locks compared, behind one trait: "run this section under the lock".

use std::cell::UnsafeCell;

/// The lock under test, as each library spells "run this under the lock": `hold` for the
/// foreground, `hold_background` for the background owners (the same, except for reader-writer
/// locks, where one side reads and the other writes).
pub trait DemoLock: Send + Sync + 'static {
    fn hold(&self, f: impl FnOnce() + Send);
    fn hold_background(&self, f: impl FnOnce() + Send) {
        self.hold(f)
    }
    fn new() -> Self;
}

/// A reader-writer lock under test: run this section holding it for reading, or for writing.
pub trait DemoRwLock: Send + Sync + 'static {
    fn read(&self, f: impl FnOnce());
    fn write(&self, f: impl FnOnce());
    fn new() -> Self;
}

/// A reader-writer lock in a scenario's roles: the background owners read and the foreground
/// writes (`BACKGROUND_READS`, `rwlock-readers`), or the other way round (`rwlock-writer`).
pub struct RwRoles<L, const BACKGROUND_READS: bool>(L);

pub type ReadersHold<L> = RwRoles<L, true>;
pub type WriterHolds<L> = RwRoles<L, false>;

impl<L: DemoRwLock, const BACKGROUND_READS: bool> DemoLock for RwRoles<L, BACKGROUND_READS> {
    fn hold(&self, f: impl FnOnce() + Send) {
        if BACKGROUND_READS {
            self.0.write(f)
        } else {
            self.0.read(f)
        }
    }
    fn hold_background(&self, f: impl FnOnce() + Send) {
        if BACKGROUND_READS {
            self.0.read(f)
        } else {
            self.0.write(f)
        }
    }
    fn new() -> Self {
        RwRoles(L::new())
    }
}

impl DemoRwLock for std::sync::RwLock<()> {
    fn read(&self, f: impl FnOnce()) {
        let _g = self.read().unwrap();
        f()
    }
    fn write(&self, f: impl FnOnce()) {
        let _g = self.write().unwrap();
        f()
    }
    fn new() -> Self {
        std::sync::RwLock::new(())
    }
}

impl DemoRwLock for parking_lot::RwLock<()> {
    fn read(&self, f: impl FnOnce()) {
        let _g = self.read();
        f()
    }
    fn write(&self, f: impl FnOnce()) {
        let _g = self.write();
        f()
    }
    fn new() -> Self {
        parking_lot::RwLock::new(())
    }
}

impl DemoRwLock for proxy_lock::RwLock<()> {
    fn read(&self, f: impl FnOnce()) {
        let _g = self.read().unwrap();
        f()
    }
    fn write(&self, f: impl FnOnce()) {
        let _g = self.write().unwrap();
        f()
    }
    fn new() -> Self {
        proxy_lock::RwLock::new(())
    }
}

/// A pthread rwlock: no priority-inheritance protocol exists for it, so this is what the
/// kernel offers readers and writers. Boxed, so it never moves after initialisation.
pub struct PthreadRwLock(Box<UnsafeCell<libc::pthread_rwlock_t>>);

// SAFETY: a pthread rwlock is made to be shared between threads.
unsafe impl Send for PthreadRwLock {}
// SAFETY: as above.
unsafe impl Sync for PthreadRwLock {}

impl DemoRwLock for PthreadRwLock {
    fn read(&self, f: impl FnOnce()) {
        // SAFETY: initialised (statically) and never moved (boxed).
        assert_eq!(unsafe { libc::pthread_rwlock_rdlock(self.0.get()) }, 0);
        f();
        // SAFETY: this thread holds a read lock on it.
        assert_eq!(unsafe { libc::pthread_rwlock_unlock(self.0.get()) }, 0);
    }
    fn write(&self, f: impl FnOnce()) {
        // SAFETY: as in `read`.
        assert_eq!(unsafe { libc::pthread_rwlock_wrlock(self.0.get()) }, 0);
        f();
        // SAFETY: this thread holds the write lock.
        assert_eq!(unsafe { libc::pthread_rwlock_unlock(self.0.get()) }, 0);
    }
    fn new() -> Self {
        PthreadRwLock(Box::new(UnsafeCell::new(libc::PTHREAD_RWLOCK_INITIALIZER)))
    }
}

impl Drop for PthreadRwLock {
    fn drop(&mut self) {
        // SAFETY: initialised, and unlocked (every holder released it before returning).
        unsafe { libc::pthread_rwlock_destroy(self.0.get()) };
    }
}

impl DemoLock for std::sync::Mutex<()> {
    fn hold(&self, f: impl FnOnce() + Send) {
        let _g = self.lock().unwrap();
        f()
    }
    fn new() -> Self {
        std::sync::Mutex::new(())
    }
}

impl DemoLock for parking_lot::Mutex<()> {
    fn hold(&self, f: impl FnOnce() + Send) {
        let _g = self.lock();
        f()
    }
    fn new() -> Self {
        parking_lot::Mutex::new(())
    }
}

/// proxy-lock with the guard API.
impl DemoLock for proxy_lock::Mutex<()> {
    fn hold(&self, f: impl FnOnce() + Send) {
        let _g = self.lock().unwrap();
        f()
    }
    fn new() -> Self {
        proxy_lock::Mutex::new(())
    }
}

/// proxy-lock with the closure API: the section may run on the thread that holds the lock.
pub struct RunLock(proxy_lock::Mutex<()>);

impl DemoLock for RunLock {
    fn hold(&self, f: impl FnOnce() + Send) {
        self.0.run(|_| f()).unwrap()
    }
    fn new() -> Self {
        RunLock(proxy_lock::Mutex::new(()))
    }
}

#[path = "../../benches/workloads/pthread.rs"]
#[allow(dead_code)] // the condition variable is for hackbench
mod pthread;

/// A pthread mutex with `PTHREAD_PRIO_INHERIT`: the kernel's PI futex, which boosts an owner to
/// a waiting real-time thread's priority (and does nothing between ordinary threads).
pub type PiMutex = pthread::PiMutex<()>;

impl DemoLock for PiMutex {
    fn hold(&self, f: impl FnOnce() + Send) {
        let _g = self.lock().unwrap();
        f()
    }
    fn new() -> Self {
        pthread::PiMutex::new(())
    }
}

/// Every reader-writer lock, in table order, for the `rwlock-*` scenarios.
pub const RW_LOCKS: [(&str, &str); 4] = [
    ("std", "std::sync::RwLock"),
    ("parking_lot", "parking_lot::RwLock"),
    ("pthread_rwlock", "pthread rwlock (no PI)"),
    ("proxy_lock", "proxy_lock::RwLock"),
];

/// Every lock, in table order: (name in `--json`, name in tables).
pub const LOCKS: [(&str, &str); 5] = [
    ("std", "std::sync::Mutex"),
    ("parking_lot", "parking_lot::Mutex"),
    ("pthread_pi", "pthread PRIO_INHERIT"),
    ("proxy_lock", "proxy_lock::Mutex"),
    ("proxy_lock_run", "proxy_lock::Mutex::run"),
];
