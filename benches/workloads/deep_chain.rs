//! Deep blocked_on chains on small stacks: a chain of threads, each holding its own lock and
//! waiting for the previous thread's, with a better thread waiting at the end that lends down
//! the whole chain; and rings of threads that wait for each other. Shared by `tests/chain.rs`
//! and `examples/deep_chain.rs`.

use proxy_lock::{Mutex, current_tid, thread_blocked_on};
use std::sync::mpsc::channel;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// The stack every thread here gets: a recursion per hop used to overflow it from depth 100.
pub const STACK: usize = 64 * 1024;

fn set_own_nice(nice: i32) {
    // SAFETY: setpriority on the calling thread's tid; no pointers. A refusal (no privilege)
    // only means nothing is lent down the chain.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, current_tid() as libc::id_t, nice) };
}

/// Polls `done` until it holds; panics saying `what` never happened if that takes 30 s.
fn poll_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "{what} never happened");
        thread::sleep(Duration::from_micros(50));
    }
}

fn wait_until_blocked(tid: i32, on: &Mutex<()>) {
    poll_until(&format!("thread {tid} sleeping on its lock"), || {
        thread_blocked_on(tid) == Some(on.id())
    });
}

/// Builds a chain of `depth` nice-19 threads (thread k holds lock k and waits for lock k-1;
/// thread 0 holds lock 0) with a nice-0 waiter on the last lock, which lends down the chain
/// where the process may; then has thread 0 let go, and returns how long the chain took to
/// unwind, from that release to the last thread's exit.
pub fn unwind_time(depth: usize) -> Duration {
    let locks: Vec<Arc<Mutex<()>>> = (0..depth).map(|_| Arc::new(Mutex::new(()))).collect();
    let (go_tx, go) = channel::<()>();
    let (held_tx, held) = channel();
    let mut threads = Vec::with_capacity(depth + 1);
    let (mut go, mut first_tid) = (Some(go), 0);
    // Thread k (k < depth) holds lock k; thread k > 0 then waits for lock k-1; thread 0
    // waits for `go`; thread `depth`, at nice 0, waits for the last lock.
    for k in 0..=depth {
        let mine = locks.get(k).cloned();
        let previous = k.checked_sub(1).map(|p| Arc::clone(&locks[p]));
        let (held_tx, go) = (held_tx.clone(), if k == 0 { go.take() } else { None });
        threads.push(
            thread::Builder::new()
                .stack_size(STACK)
                .spawn(move || {
                    if k < depth {
                        set_own_nice(19);
                    }
                    let guard = mine.as_ref().map(|m| m.lock().unwrap());
                    held_tx.send(current_tid()).unwrap();
                    if let Some(go) = go {
                        go.recv().unwrap();
                    }
                    if let Some(previous) = previous {
                        drop(previous.lock().unwrap());
                    }
                    drop(guard);
                })
                .unwrap(),
        );
        let tid = held.recv().unwrap();
        match k {
            0 => first_tid = tid,
            _ => wait_until_blocked(tid, &locks[k - 1]),
        }
    }
    wait_until_lent(first_tid, depth);
    let start = Instant::now();
    go_tx.send(()).unwrap();
    for t in threads {
        t.join().unwrap();
    }
    start.elapsed()
}

/// Waits until the last waiter's loan has gone down the chain, so that the unwind is timed
/// without it: until the first owner runs at nice 0 where loans are allowed (a loan walk goes
/// at most 1,024 owners deep, so a longer chain's first owner is not lent to), or a moment
/// where they are not.
fn wait_until_lent(first_tid: i32, depth: usize) {
    if !proxy_lock::capabilities().cap_sys_nice || depth > 1_024 {
        thread::sleep(Duration::from_millis(50));
        return;
    }
    poll_until("the loan reaching the first owner", || {
        // SAFETY: getpriority on a thread of ours; no pointers.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, first_tid as libc::id_t) == 0 }
    });
}

/// The same chain with `std::sync::Mutex`, which lends nothing, as the reference: how long
/// the wake-ups and thread exits alone take.
pub fn unwind_time_std(depth: usize) -> Duration {
    use std::sync::Mutex;
    let locks: Vec<Arc<Mutex<()>>> = (0..depth).map(|_| Arc::new(Mutex::new(()))).collect();
    let (go_tx, go) = channel::<()>();
    let (held_tx, held) = channel();
    let mut threads = Vec::with_capacity(depth + 1);
    let mut go = Some(go);
    // Thread k (k < depth) holds lock k; thread k > 0 then waits for lock k-1; thread 0
    // waits for `go`; thread `depth`, at nice 0, waits for the last lock.
    for k in 0..=depth {
        let mine = locks.get(k).cloned();
        let previous = k.checked_sub(1).map(|p| Arc::clone(&locks[p]));
        let (held_tx, go) = (held_tx.clone(), if k == 0 { go.take() } else { None });
        threads.push(
            thread::Builder::new()
                .stack_size(STACK)
                .spawn(move || {
                    set_own_nice(if k == depth { 0 } else { 19 });
                    let guard = mine.as_ref().map(|m| m.lock().unwrap());
                    held_tx.send(current_tid()).unwrap();
                    if let Some(go) = go {
                        go.recv().unwrap();
                    }
                    if let Some(previous) = previous {
                        drop(previous.lock().unwrap());
                    }
                    drop(guard);
                })
                .unwrap(),
        );
        let tid = held.recv().unwrap();
        if k > 0 {
            wait_until_asleep(tid);
        }
    }
    let start = Instant::now();
    go_tx.send(()).unwrap();
    for t in threads {
        t.join().unwrap();
    }
    start.elapsed()
}

/// Waits until thread `tid` of this process sleeps (state `S` in `/proc`): a thread that
/// sent its tid and then locks sleeps only on that lock.
fn wait_until_asleep(tid: i32) {
    let path = format!("/proc/self/task/{tid}/stat");
    poll_until(&format!("thread {tid} sleeping"), || {
        let stat = std::fs::read_to_string(&path).unwrap_or_default();
        // The state follows the parenthesised name, which may hold spaces.
        stat.rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            == Some('S')
    });
}

/// A ring of `size` threads: thread k holds lock k, then waits for lock k+1 (mod `size`). The
/// thread whose wait closes the ring finds the cycle, whatever its length, and panics saying
/// so; its unwinding lets the others go. Returns the panic messages.
pub fn ring(size: usize) -> Vec<String> {
    let locks: Vec<Arc<Mutex<()>>> = (0..size).map(|_| Arc::new(Mutex::new(()))).collect();
    let all_hold = Arc::new(Barrier::new(size));
    let threads: Vec<_> = (0..size)
        .map(|k| {
            let (mine, next) = (Arc::clone(&locks[k]), Arc::clone(&locks[(k + 1) % size]));
            let all_hold = Arc::clone(&all_hold);
            thread::Builder::new()
                .stack_size(STACK)
                .spawn(move || {
                    let _guard = mine.lock().unwrap();
                    all_hold.wait();
                    drop(next.lock().unwrap_or_else(|e| e.into_inner()));
                })
                .unwrap()
        })
        .collect();
    threads
        .into_iter()
        .filter_map(|t| t.join().err())
        .map(|payload| {
            payload
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "a panic that is not a deadlock report".into())
        })
        .collect()
}
