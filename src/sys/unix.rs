//! Thread-exit hooks and fork handlers on Unix: pthread keys and `pthread_atfork`.

use std::sync::OnceLock;

/// The exit hook registered for this thread and its argument, boxed as the pthread key's value.
struct ExitHook {
    arg: *mut (),
    hook: unsafe fn(*mut ()),
}

/// The pthread key whose destructor runs [`ExitHook`]s.
///
/// Why a pthread key and not a `thread_local!` with `Drop`: glibc runs pthread key destructors
/// after every `__cxa_thread_atexit` destructor, which is where Rust's thread-local destructors
/// live. So a Rust destructor that locks one of our mutexes during thread exit still finds the
/// thread's record alive. Where the order is different (musl runs both from pthread keys), a
/// record freed too early is simply created again, and the key is set again, which POSIX answers
/// with another destructor round.
fn exit_key() -> libc::pthread_key_t {
    static KEY: OnceLock<libc::pthread_key_t> = OnceLock::new();
    *KEY.get_or_init(|| {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is a valid out-pointer and `run_exit_hook` has the C ABI the call expects.
        let rc = unsafe { libc::pthread_key_create(&mut key, Some(run_exit_hook)) };
        assert_eq!(rc, 0, "proxy_lock: pthread_key_create failed ({rc})");
        key
    })
}

unsafe extern "C" fn run_exit_hook(value: *mut libc::c_void) {
    // SAFETY: the key's only values are `Box<ExitHook>`s made by `on_thread_exit`, and POSIX
    // clears the slot before calling the destructor, so each box is consumed once.
    let hook = unsafe { Box::from_raw(value as *mut ExitHook) };
    // SAFETY: the hook was registered for this thread with this argument.
    unsafe { (hook.hook)(hook.arg) }
}

/// Registers `fork()` handlers (`pthread_atfork`): `prepare` in the forking thread before the
/// fork, `parent` in it after, `child` in the child's only thread. Failure (out of memory) is
/// ignored: a child then inherits the state as it was, which is what happens without them.
pub(crate) fn at_fork(prepare: extern "C" fn(), parent: extern "C" fn(), child: extern "C" fn()) {
    // SAFETY: three plain C-ABI functions that never unwind (the callers make sure).
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

/// Arranges for `hook(arg)` to run when the calling thread exits. One hook per thread: a second
/// registration replaces the first (the caller registers once per record).
pub(crate) fn on_thread_exit(arg: *mut (), hook: unsafe fn(*mut ())) {
    let key = exit_key();
    let value = Box::into_raw(Box::new(ExitHook { arg, hook }));
    // SAFETY: `key` was created by pthread_key_create and is never deleted.
    let old = unsafe { libc::pthread_getspecific(key) };
    if !old.is_null() {
        // SAFETY: a previous value is one of our boxes, replaced below and so never run.
        drop(unsafe { Box::from_raw(old as *mut ExitHook) });
    }
    // SAFETY: as above; the value is a live heap pointer.
    let rc = unsafe { libc::pthread_setspecific(key, value as *const libc::c_void) };
    if rc != 0 {
        // Out of memory for the key slot: the record is leaked instead of freed, never unsafe.
        // SAFETY: we still own the box; nobody else saw it.
        drop(unsafe { Box::from_raw(value) });
    }
}
