//! The locks compared, behind one trait: "run this section under the lock".

/// The lock under test, as each library spells "run this under the lock".
pub trait DemoLock: Send + Sync + 'static {
    fn hold(&self, f: impl FnOnce() + Send);
    fn new() -> Self;
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

/// Every lock, in table order: (name in `--json`, name in tables).
pub const LOCKS: [(&str, &str); 5] = [
    ("std", "std::sync::Mutex"),
    ("parking_lot", "parking_lot::Mutex"),
    ("pthread_pi", "pthread PRIO_INHERIT"),
    ("proxy_lock", "proxy_lock::Mutex"),
    ("proxy_lock_run", "proxy_lock::Mutex::run"),
];
