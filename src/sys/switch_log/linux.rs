//! Linux: whether a thread of ours is on a CPU right now, read from the log of its context
//! switches that the kernel keeps for perf (`PERF_RECORD_SWITCH` records in a ring shared with
//! us).
//!
//! Why not the thread's CPU clock: for a thread that runs, the kernel answers a clock read
//! under that thread's runqueue lock after charging it the time it has run, and when another
//! thread is queued on that CPU the charge usually ends in a reschedule interrupt. A waiter
//! that read a running owner's clock every couple of microseconds cut a nice-0 owner's work to
//! a third (`examples/watch_cost.rs`). Reading the log is two loads from shared memory: the
//! owner never notices.
//!
//! What it costs instead:
//! * opening a log is a `perf_event_open` and an `mmap` (25-80 µs here). A thread opens its
//!   own, once, after it has given back loans twice (`donor::after_passing_on`): a thread lent
//!   to again and again is one waiters watch, and it pays when it holds no lock, where opening
//!   it from the waiter's watch would put that time into the waiter's wait. A thread lent to
//!   once, as each link of a long chain is, opens none. Until a thread has its log, waiters
//!   read its clock;
//! * the first per-task perf event of a process patches the kernel's scheduler hooks in
//!   (5-11 ms here), paid by the first thread to open a log; that event is kept for the life
//!   of the process (`keep_hooks_in`), so that the hooks stay in, by a mapping of its control
//!   page (one page, no fd);
//! * every context switch of a thread with a log costs it about 1.5 µs more (a pipe
//!   ping-pong, here), for as long as that thread lives;
//! * two pages per watched thread, and the kernel's event behind them. No fd: the log closes
//!   its fd as soon as the ring is mapped (the mapping keeps the event alive), so logs never
//!   count against the process's fd limit or show among its open files.
//!
//! Where perf is refused (`perf_event_paranoid` 3, a seccomp filter, no `CONFIG_PERF_EVENTS`),
//! nothing is opened again and the callers read CPU clocks as before.

use crate::Tid;
use crate::sys::sched::errno;
use std::sync::atomic::{AtomicPtr, AtomicU8, AtomicU32, AtomicU64, Ordering};

/// `perf_event_attr`, in its first published size (`PERF_ATTR_SIZE_VER0`): the kernel reads
/// the fields it knows from a shorter struct and takes the rest as zero.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    bp_addr: u64,
}

const PERF_TYPE_SOFTWARE: u32 = 1;
/// A software event that counts nothing: it exists for its side-band records.
const PERF_COUNT_SW_DUMMY: u64 = 9;
/// `perf_event_attr` flag bits used here.
const FLAG_EXCLUDE_KERNEL: u64 = 1 << 5;
const FLAG_EXCLUDE_HV: u64 = 1 << 6;
/// Log a record at every switch in and out of the thread.
const FLAG_CONTEXT_SWITCH: u64 = 1 << 26;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
const PERF_RECORD_SWITCH: u32 = 14;
/// In a switch record's `misc`: the thread left its CPU (else it arrived).
const PERF_RECORD_MISC_SWITCH_OUT: u16 = 1 << 13;
/// Offsets in the ring's first page (`struct perf_event_mmap_page`).
const DATA_HEAD_AT: usize = 1024;
const DATA_OFFSET_AT: usize = 1040;
const DATA_SIZE_AT: usize = 1048;
/// A switch record is its 8-byte header alone (no `sample_id_all`).
const RECORD_LEN: u64 = 8;

/// An open log of one thread's context switches: a mapping of the perf event's ring, which
/// holds the event open (its fd was closed once it was mapped). Unmapped on drop.
pub(crate) struct SwitchLog {
    /// The process's fork generation when the log was opened (`GENERATION`).
    generation: u32,
    /// The mapping: a control page, then the ring.
    map: *mut libc::c_void,
    map_len: usize,
    ring_at: usize,
    ring_len: u64,
}

// SAFETY: the mapping is only read, through atomics, and the kernel is its only writer; it is
// unmapped once, on drop.
unsafe impl Send for SwitchLog {}
// SAFETY: as for Send: shared readers only load.
unsafe impl Sync for SwitchLog {}

impl SwitchLog {
    /// Opens a log of thread `tid`'s switches, unless perf is refused to this process (then
    /// never again). The process's first call also opens the event that keeps the kernel's
    /// hooks in (`keep_hooks_in`). `None` on any failure (also fd limit, thread gone).
    pub(crate) fn open(tid: Tid) -> Option<SwitchLog> {
        // Relaxed: the state guards no data; the events are the kernel's.
        match STATE.load(Ordering::Relaxed) {
            READY => {}
            UNTRIED if keep_hooks_in() => {}
            _ => return None,
        }
        let log = Self::open_now(tid);
        if let Err(errno) = &log
            && refused(*errno)
        {
            // Relaxed: a one-way flag; a stale read costs one more refused open.
            STATE.store(REFUSED, Ordering::Relaxed);
        }
        log.ok()
    }

    fn open_now(tid: Tid) -> Result<SwitchLog, libc::c_int> {
        let fd = open_event(tid)?;
        // One control page and one ring page: the ring needs to hold one record.
        let page = page_size();
        let map_len = 2 * page;
        // Read-only is what makes the kernel overwrite old records instead of stopping when the
        // ring is full (nobody consumes).
        let mapped = map_read_only(fd, map_len);
        // The mapping holds the event open and the ring is all we read, so the fd goes now.
        // SAFETY: closes the fd opened above, which nothing else refers to.
        unsafe { libc::close(fd) };
        let map = mapped?;
        let mut log = SwitchLog {
            // Relaxed: bumped only in a forked child before it has a second thread.
            generation: GENERATION.load(Ordering::Relaxed),
            map,
            map_len,
            ring_at: page,
            ring_len: page as u64,
        };
        // Kernels since 4.1 say where the ring is; older ones leave zeros and use the layout
        // assumed above.
        let (at, len) = (log.load(DATA_OFFSET_AT), log.load(DATA_SIZE_AT));
        if at != 0 && len != 0 {
            (log.ring_at, log.ring_len) = (at as usize, len);
        }
        Ok(log)
    }

    /// Loads the u64 at byte `at` of the mapping.
    fn load(&self, at: usize) -> u64 {
        debug_assert!(at.is_multiple_of(8) && at + 8 <= self.map_len);
        // SAFETY: `at` is an aligned offset inside the live mapping (checked by the callers'
        // constants and `ring_at`/`ring_len`, which the kernel gave); the kernel writes it
        // concurrently, hence the atomic load.
        let word = unsafe { &*(self.map.cast::<u8>().add(at) as *const AtomicU64) };
        // Acquire: for the head, pairs with the kernel's barrier between writing a record and
        // publishing the head, so the record read next is complete.
        word.load(Ordering::Acquire)
    }

    /// Whether the thread is on a CPU: its last logged switch was one in. `None` before the
    /// first switch is logged, or if the ring holds something else (then the caller asks the
    /// clock).
    pub(crate) fn on_cpu(&self) -> Option<bool> {
        let head = self.load(DATA_HEAD_AT);
        if head < RECORD_LEN {
            return None;
        }
        // The record before the head stays intact until the ring wraps round to it, hundreds
        // of switches later; a switch since the head was read only makes the answer as old as
        // any answer is by the time it is used.
        let at = self.ring_at + ((head - RECORD_LEN) % self.ring_len) as usize;
        let header = self.load(at);
        let (kind, misc) = (header as u32, (header >> 32) as u16);
        (kind == PERF_RECORD_SWITCH).then_some(misc & PERF_RECORD_MISC_SWITCH_OUT == 0)
    }
}

/// Maps the first `len` bytes of the perf event behind `fd`, read-only and shared.
fn map_read_only(fd: libc::c_int, len: usize) -> Result<*mut libc::c_void, libc::c_int> {
    // SAFETY: maps a valid perf fd read-only at an address of the kernel's choosing; the
    // kernel checks `len` against the event's buffer.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    (map != libc::MAP_FAILED).then_some(map).ok_or_else(errno)
}

/// Opens a perf event that logs thread `tid`'s context switches, and returns its fd.
fn open_event(tid: Tid) -> Result<libc::c_int, libc::c_int> {
    let attr = PerfEventAttr {
        kind: PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: PERF_COUNT_SW_DUMMY,
        // Without `exclude_kernel`, `perf_event_paranoid` 2 (the usual default) refuses
        // an unprivileged caller; switch records are logged either way.
        flags: FLAG_CONTEXT_SWITCH | FLAG_EXCLUDE_KERNEL | FLAG_EXCLUDE_HV,
        ..Default::default()
    };
    // SAFETY: `attr` is a valid perf_event_attr of the size it states, alive for the call;
    // the kernel validates everything else (an unknown or foreign tid is an error).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            tid as libc::pid_t,
            -1 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    } as libc::c_int;
    if fd < 0 {
        return Err(errno());
    }
    Ok(fd)
}

impl Drop for SwitchLog {
    fn drop(&mut self) {
        // Relaxed: see `GENERATION`.
        if self.generation != GENERATION.load(Ordering::Relaxed) {
            // Opened before a fork (a record the parent had retired, freed in the child):
            // perf mappings are not copied into a child, so the address may be one of the
            // child's own mappings by now.
            return;
        }
        // SAFETY: the mapping is ours, and dropping the log ends every use of it.
        unsafe { libc::munmap(self.map, self.map_len) };
    }
}

/// How many forks stand between the first process and this one: a log opened in another
/// generation has no mapping here (`SwitchLog`'s drop).
static GENERATION: AtomicU32 = AtomicU32::new(0);

/// In a forked child, before it has a second thread: logs opened before now belong to the
/// parent's threads and mappings.
pub(crate) fn after_fork_in_child() {
    // Relaxed: the child has one thread; threads it starts are ordered after this by their
    // creation.
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// A thread's switch log, opened by the thread itself once it has given back loans twice (so a
/// waiter is likely to watch it again), and closed with the thread's record (which the epoch
/// scheme frees only once no reader can hold it).
///
/// The slot holds null (no log yet), `NO_LOG` or an open log. Only the thread itself writes it
/// (`open`); other threads only read it (`on_cpu`).
pub(crate) struct SwitchLogSlot(AtomicPtr<SwitchLog>);

/// In a slot: opening a log for this thread failed although perf works (fd limit, thread
/// gone); do not try again.
const NO_LOG: *mut SwitchLog = std::ptr::dangling_mut();

/// Whether a slot value is an open log.
fn is_log(log: *mut SwitchLog) -> bool {
    !log.is_null() && log != NO_LOG
}

impl SwitchLogSlot {
    pub(crate) const fn new() -> SwitchLogSlot {
        SwitchLogSlot(AtomicPtr::new(std::ptr::null_mut()))
    }

    /// Whether the thread is on a CPU (`SwitchLog::on_cpu`). `None` until its log is open:
    /// the caller asks the thread's clock.
    pub(crate) fn on_cpu(&self) -> Option<bool> {
        // Acquire: pairs with the Release install below, so the log's fields are visible.
        let log = self.0.load(Ordering::Acquire);
        if !is_log(log) {
            return None;
        }
        // SAFETY: a non-null, non-sentinel pointer came from `Box::into_raw` in `install`
        // and is freed only when the slot drops, with the record the caller borrows.
        unsafe { &*log }.on_cpu()
    }

    /// Whether a log is open (its mapping and kernel event are held until the slot drops).
    pub(crate) fn is_open(&self) -> bool {
        // Relaxed: the slot's thread, its only writer, asks before it opens or drops it; a
        // test's look from another thread needs no ordering with anything else.
        is_log(self.0.load(Ordering::Relaxed))
    }

    /// Opens the log of thread `tid`, whose record holds this slot, unless it is open or
    /// cannot be. Called by that thread only.
    pub(crate) fn open(&self, tid: Tid) {
        // Relaxed: we are the slot's only writer.
        if self.0.load(Ordering::Relaxed).is_null() {
            self.install(tid);
        }
    }

    #[cold]
    fn install(&self, tid: Tid) {
        let new = match SwitchLog::open(tid) {
            Some(log) => Box::into_raw(Box::new(log)),
            // Perf works, so the failure is this thread's.
            None if STATE.load(Ordering::Relaxed) == READY => NO_LOG,
            // Another thread opening the process's first event, or refused: nothing to
            // remember here.
            None => return,
        };
        // Release: publishes the log (see `on_cpu`). A plain store: only the thread itself
        // opens its log (`Task::open_switch_log`), so nobody else writes the slot.
        self.0.store(new, Ordering::Release);
    }
}

impl SwitchLogSlot {
    /// In a forked child: forgets the log inherited from the parent, which watches a thread of
    /// the parent's. Its mapping did not come with the fork (the kernel does not copy perf
    /// mappings), so only the record of it is freed. The child has one thread, so nobody reads
    /// it meanwhile.
    pub(crate) fn forget_after_fork(&self) {
        // Relaxed: the child's only thread is the caller.
        let log = self.0.swap(std::ptr::null_mut(), Ordering::Relaxed);
        if is_log(log) {
            // SAFETY: installed by `install` from `Box::into_raw`, now out of the slot.
            let log = *unsafe { Box::from_raw(log) };
            // No unmap: the address may be one of the child's own mappings by now.
            std::mem::forget(log);
        }
    }
}

impl Drop for SwitchLogSlot {
    fn drop(&mut self) {
        let log = *self.0.get_mut();
        if is_log(log) {
            // SAFETY: installed by `install` from `Box::into_raw`; the slot is going away, so
            // nobody reads the log any more.
            drop(unsafe { Box::from_raw(log) });
        }
    }
}

/// Whether perf may be used: `UNTRIED` until the first `open`.
static STATE: AtomicU8 = AtomicU8::new(UNTRIED);
const UNTRIED: u8 = 0;
/// One thread is opening the first event; the others open nothing meanwhile.
const OPENING_FIRST: u8 = 1;
const READY: u8 = 2;
const REFUSED: u8 = 3;

/// Opens the process's first per-task perf event, on the calling thread, and never closes it:
/// the kernel patches its scheduler hooks in for the first one (5-11 ms here) and out again
/// once the last one closes, so without this every thread that came after a lull would pay
/// again. True if perf works. The caller is a thread that holds no lock
/// (`Task::open_switch_log`), so nobody waits for it meanwhile.
#[cold]
fn keep_hooks_in() -> bool {
    // Relaxed: see `open`.
    if STATE
        .compare_exchange(UNTRIED, OPENING_FIRST, Ordering::Relaxed, Ordering::Relaxed)
        .is_err()
    {
        return false;
    }
    let state = match open_event(crate::sys::gettid()) {
        Ok(fd) => {
            keep_without_fd(fd);
            READY
        }
        Err(e) if refused(e) => REFUSED,
        // Short of fds or memory: a later thread tries again.
        Err(_) => UNTRIED,
    };
    STATE.store(state, Ordering::Relaxed);
    state == READY
}

/// Keeps the event behind `fd` alive for the life of the process without holding the fd: a
/// mapping of its control page keeps it, as a log's mapping does. Where the mapping fails, the
/// fd stays open instead.
fn keep_without_fd(fd: libc::c_int) {
    // The control page alone; never unmapped (and a forked child does not inherit it: the
    // kernel marks perf mappings so).
    if map_read_only(fd, page_size()).is_ok() {
        // SAFETY: closes the fd opened by our caller, which nothing else refers to.
        unsafe { libc::close(fd) };
    }
}

/// Whether `errno` from `perf_event_open` means this process may not use it at all.
fn refused(errno: libc::c_int) -> bool {
    matches!(
        errno,
        libc::EACCES | libc::EPERM | libc::ENOSYS | libc::ENOENT | libc::EINVAL | libc::EOPNOTSUPP
    )
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as usize } else { 4096 }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::SwitchLog;
    use crate::sys::test_threads::wait_until_asleep;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, mpsc};
    use std::time::{Duration, Instant};

    /// Opens a log of `tid` (the first open also opens the process's first event); `None`,
    /// with the reason printed, where perf is refused.
    fn open_log(tid: crate::Tid) -> Option<SwitchLog> {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(log) = SwitchLog::open(tid) {
                return Some(log);
            }
            if super::STATE.load(Ordering::Relaxed) == super::REFUSED || Instant::now() > end {
                crate::sys::test_threads::skip(
                    "perf_event_open is refused here, the clock reads stand in",
                );
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A thread asleep reads as off a CPU, the same thread spinning as on one, and asleep again
    /// as off one, through a log opened from another thread.
    #[test]
    fn the_log_tells_a_sleeping_thread_from_a_running_one() {
        let (tid_tx, tid_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let worker = std::thread::spawn(move || {
            tid_tx.send(crate::current_tid()).unwrap();
            go_rx.recv().unwrap();
            while !stop2.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
            let _ = go_rx.recv();
        });
        let tid = tid_rx.recv().unwrap();
        wait_until_asleep(tid);
        let log = open_log(tid);
        if let Some(log) = &log {
            // Nothing logged until it next switches: the caller asks the clock then.
            assert_eq!(log.on_cpu(), None);
        }
        go_tx.send(()).unwrap();
        if let Some(log) = &log {
            // Running: within a second (the unit tests share the CPUs) the log says so. The
            // look that saw it is the one checked: a second look could find it preempted.
            let end = Instant::now() + Duration::from_secs(1);
            let seen = loop {
                let now = log.on_cpu();
                if now == Some(true) || Instant::now() >= end {
                    break now;
                }
            };
            assert_eq!(seen, Some(true), "never seen running");
        }
        stop.store(true, Ordering::Relaxed);
        wait_until_asleep(tid);
        if let Some(log) = &log {
            assert_eq!(log.on_cpu(), Some(false), "asleep, yet logged as running");
        }
        drop(go_tx);
        worker.join().unwrap();
        // A thread that has exited is not switched out in the log: its last record says it
        // runs. That is why `Task::on_cpu` answers for an exited owner's record itself.
    }
}
