//! Thread-exit hooks and fork handlers where there are no pthreads (Windows): a thread-local
//! destructor runs the hook, and there is no `fork` to prepare for.

use std::cell::Cell;

/// Runs its hook when the thread's thread-locals are destroyed.
struct ExitHook(Cell<Option<(*mut (), unsafe fn(*mut ()))>>);

impl Drop for ExitHook {
    fn drop(&mut self) {
        if let Some((arg, hook)) = self.0.take() {
            // SAFETY: the hook was registered for this thread with this argument.
            unsafe { hook(arg) }
        }
    }
}

std::thread_local! {
    static EXIT_HOOK: ExitHook = const { ExitHook(Cell::new(None)) };
}

/// Arranges for `hook(arg)` to run when the calling thread exits. One hook per thread: a second
/// registration replaces the first. A thread whose thread-locals are already being destroyed
/// cannot register: its record is then leaked instead of freed, never unsafe.
pub(crate) fn on_thread_exit(arg: *mut (), hook: unsafe fn(*mut ())) {
    let _ = EXIT_HOOK.try_with(|h| h.0.set(Some((arg, hook))));
}

/// No `fork` here: nothing to register.
pub(crate) fn at_fork(
    _prepare: extern "C" fn(),
    _parent: extern "C" fn(),
    _child: extern "C" fn(),
) {
}
