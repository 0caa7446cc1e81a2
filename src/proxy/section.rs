//! A section as `Mutex::run` builds it on the caller's stack: the closure, the place for its
//! outcome, and the type-erased entry a holder calls; and `Mutex::run` itself.

use super::{SectionHead, publish_and_wait};
use crate::mutex::Mutex;
use crate::task;
use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{LockResult, PoisonError};

/// What a section left: whether the mutex was poisoned when it ran, and its result or panic.
struct Outcome<R> {
    was_poisoned: bool,
    result: std::thread::Result<R>,
}

/// A section and the place for its outcome, on the caller's stack.
#[repr(C)]
struct Section<'m, T: ?Sized, F, R> {
    /// First, so the section's address is its head's.
    head: SectionHead,
    mutex: &'m Mutex<T>,
    f: UnsafeCell<Option<F>>,
    outcome: UnsafeCell<Option<Outcome<R>>>,
}

impl<'m, T: ?Sized, F: FnOnce(&mut T) -> R, R> Section<'m, T, F, R> {
    fn new(mutex: &'m Mutex<T>, f: F) -> Self {
        Section {
            head: SectionHead { call: Self::call },
            mutex,
            f: UnsafeCell::new(Some(f)),
            outcome: UnsafeCell::new(None),
        }
    }

    /// # Safety
    /// `head` is the head of a live `Section<T, F, R>`, the calling thread holds its mutex
    /// (`poisoned` or not), and nobody else touches the section meanwhile (the slot's claim,
    /// or the caller's own lock).
    unsafe fn call(head: *const SectionHead, was_poisoned: bool) {
        // SAFETY: `head` is the first field of a repr(C) Section of exactly these types.
        let section = unsafe { &*(head as *const Self) };
        // SAFETY: exclusive access, per the contract.
        let Some(f) = (unsafe { &mut *section.f.get() }).take() else {
            return;
        };
        let mutex = section.mutex;
        // SAFETY: we hold the lock, so no other reference to the data exists.
        let data = unsafe { &mut *mutex.data.get() };
        let result = catch_unwind(AssertUnwindSafe(move || f(data)));
        if result.is_err() {
            mutex.raw.poison();
        }
        // SAFETY: exclusive access, per the contract; the publisher reads it only after DONE.
        unsafe {
            *section.outcome.get() = Some(Outcome {
                was_poisoned,
                result,
            })
        };
    }

    /// Runs the section on this thread, which holds the lock, `poisoned` or not.
    ///
    /// # Safety
    /// The calling thread holds `self.mutex`.
    unsafe fn run_here(&self, poisoned: bool) {
        // SAFETY: forwarded; the section is ours and unpublished.
        unsafe { Self::call(self.erased(), poisoned) }
    }

    /// The section as its type-erased head. Derived from the whole section, not from `head`
    /// alone: whoever calls it reads and writes the fields behind the head.
    fn erased(&self) -> *const SectionHead {
        (self as *const Self).cast()
    }

    fn into_result(self) -> LockResult<R> {
        let Outcome {
            was_poisoned,
            result,
        } = self
            .outcome
            .into_inner()
            .expect("proxy_lock: a section returned without running");
        match result {
            Err(payload) => resume_unwind(payload),
            Ok(r) if was_poisoned => Err(PoisonError::new(r)),
            Ok(r) => Ok(r),
        }
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Runs `f` on the protected data under the lock and returns its result: on this thread if
    /// the lock is free (or frees up during a brief spin), otherwise possibly on the thread that
    /// holds the lock, which runs the sections published while it held it before it lets the
    /// lock go (proxy execution). A waiter's section then never waits for the waiter to be
    /// woken and scheduled. A caller that has to sleep lends its scheduling attributes to the
    /// holder, as a waiter in [`Mutex::lock`] does.
    ///
    /// * The section runs exactly once, and `run` returns only after it ran, so `f` may borrow
    ///   from the caller's stack.
    /// * If the mutex was already poisoned, `f` still runs and its result comes back inside
    ///   [`PoisonError`].
    /// * If `f` panics, the mutex is poisoned and the panic resumes on the caller's thread with
    ///   the original payload; a thread that ran it by proxy carries on unharmed.
    /// * Thread-locals that `f` touches are those of the thread that runs it, which may not be
    ///   the caller's. So are the thread's name, its scheduling attributes and its stack.
    /// * Guard users and `run` users may share one mutex: mutual exclusion holds across both,
    ///   and a guard's unlock runs the published sections too.
    /// * Sections run in publication order. A holder runs at most 64 published sections per
    ///   unlock, then asks the oldest remaining caller to take the lock and serve, so no thread
    ///   serves forever (`examples/combine_bound.rs` measures the bound).
    ///
    /// # Panics
    ///
    /// If the calling thread holds this mutex already (as [`Mutex::lock`]), if the wait would
    /// never end (a deadlock cycle), and with `f`'s own panic.
    ///
    /// ```
    /// use proxy_lock::Mutex;
    /// let total = Mutex::new(0u64);
    /// let parts = [3u64, 4, 5];
    /// std::thread::scope(|s| {
    ///     for p in &parts {
    ///         // `p` borrows from this stack: `run` returns only after the section ran.
    ///         s.spawn(|| total.run(|t| *t += *p).unwrap());
    ///     }
    /// });
    /// assert_eq!(total.run(|t| *t).unwrap(), 12);
    /// ```
    pub fn run<F, R>(&self, f: F) -> LockResult<R>
    where
        F: FnOnce(&mut T) -> R + Send,
        R: Send,
    {
        let section = Section::new(self, f);
        let me = task::current();
        let took = self.raw.try_lock_spinning(me);
        if took.is_some() || !publish_and_wait(&self.raw, me, section.erased()) {
            // Our slot is in use when we did not take the lock (a `run` inside a section this
            // thread is running, or a request a deadlock left behind): take it as `lock()`
            // would.
            let poisoned = took.unwrap_or_else(|| self.raw.lock_as(me));
            // SAFETY: we hold the lock.
            unsafe { section.run_here(poisoned) };
            // SAFETY: we hold the lock; this unlock serves what others published meanwhile.
            unsafe { self.raw.unlock_as(me) };
        }
        section.into_result()
    }
}
