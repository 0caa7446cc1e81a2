//! The locks compared, behind one trait: "run this section under the lock".

use std::cell::UnsafeCell;

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

/// A pthread mutex with `PTHREAD_PRIO_INHERIT`: the kernel's PI futex, which boosts an owner to
/// a waiting real-time thread's priority (and does nothing between ordinary threads).
pub struct PiMutex(Box<UnsafeCell<libc::pthread_mutex_t>>);

// SAFETY: a pthread mutex is made to be shared between threads; it is boxed, so it never moves
// after `pthread_mutex_init`.
unsafe impl Send for PiMutex {}
// SAFETY: as above.
unsafe impl Sync for PiMutex {}

impl DemoLock for PiMutex {
    fn hold(&self, f: impl FnOnce() + Send) {
        // SAFETY: initialised in `new`, not moved since (boxed).
        let rc = unsafe { libc::pthread_mutex_lock(self.0.get()) };
        assert_eq!(rc, 0, "pthread_mutex_lock: {rc}");
        f();
        // SAFETY: locked by this thread just above.
        unsafe { libc::pthread_mutex_unlock(self.0.get()) };
    }

    fn new() -> Self {
        let m = PiMutex(Box::new(UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER)));
        // SAFETY: attr is initialised by pthread_mutexattr_init before use and destroyed after;
        // the mutex is boxed and initialised once.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            assert_eq!(libc::pthread_mutexattr_init(&mut attr), 0);
            assert_eq!(
                libc::pthread_mutexattr_setprotocol(&mut attr, libc::PTHREAD_PRIO_INHERIT),
                0,
                "this libc has no PTHREAD_PRIO_INHERIT"
            );
            assert_eq!(libc::pthread_mutex_init(m.0.get(), &attr), 0);
            libc::pthread_mutexattr_destroy(&mut attr);
        }
        m
    }
}

impl Drop for PiMutex {
    fn drop(&mut self) {
        // SAFETY: initialised, and unlocked (every `hold` unlocks before returning).
        unsafe { libc::pthread_mutex_destroy(self.0.get()) };
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
