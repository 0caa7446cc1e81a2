//! What donation leaves a thread paying per context switch: a pipe ping-pong between a thread
//! and a partner, both pinned to one CPU, timed while the thread
//!
//! * has never been lent to;
//! * is lent to (it holds a lock a better thread sleeps on);
//! * has had one loan end;
//! * has had two loans end (an owner that waiters keep meeting; such a thread once kept a perf
//!   switch log, which cost it about 1.7 µs per switch for life).
//!
//! Each round trip is two context switches of the thread. Rounds interleave the four states
//! on a fresh thread each; the table shows medians. CPU loans are off, so that the loan does
//! not move the thread away from its partner. Needs CAP_SYS_NICE for the loans (without it the
//! "lent to" row measures a thread that was not lent anything, and says so).
//!
//! ```text
//! cargo run --release --example switch_cost [-- --rounds N]
//! ```

#[path = "../benches/workloads/mod.rs"]
mod workloads;

use proxy_lock::{CpuDonation, Mutex, current_tid, set_cpu_donation};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, mpsc};

use std::thread;
use std::time::Instant;

/// Round trips per sample.
const TRIPS: u32 = 20_000;

fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it; the call
    // reads it for the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
    }
}

fn set_nice(tid: i32, nice: i32) {
    // SAFETY: setpriority on a thread of ours; no pointers.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
}

fn set_own_nice(nice: i32) {
    set_nice(current_tid(), nice);
}

fn nice_of(tid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map_or(vec![], |(_, r)| r.split(' ').collect());
    fields.get(16).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Nanoseconds per round trip of `TRIPS` one-byte messages to the partner at `peer`.
fn ping_pong(peer: &mut UnixStream) -> f64 {
    let mut byte = [0u8; 1];
    let start = Instant::now();
    for _ in 0..TRIPS {
        peer.write_all(&byte).unwrap();
        peer.read_exact(&mut byte).unwrap();
    }
    start.elapsed().as_nanos() as f64 / f64::from(TRIPS)
}

/// Holds `m` while a nice-0 thread sleeps on it (lending to us, nice 5), runs `during`, and
/// lets go. Returns what `during` returned and whether our nice showed the loan.
fn lent_to<R>(m: &Arc<Mutex<()>>, during: impl FnOnce() -> R) -> (R, bool) {
    let guard = m.lock().unwrap();
    let me = current_tid();
    let waiter = {
        let m = Arc::clone(m);
        thread::spawn(move || {
            pin_to_cpu0();
            // Threads start with their creator's nice.
            set_own_nice(0);
            drop(m.lock().unwrap());
        })
    };
    let deadline = Instant::now() + std::time::Duration::from_secs(2);
    while nice_of(me) != 0 && Instant::now() < deadline {
        thread::yield_now();
    }
    let lent = nice_of(me) == 0;
    let out = during();
    drop(guard);
    waiter.join().unwrap();
    (out, lent)
}

/// One round: a fresh nice-5 thread measured in each state. Returns ns per round trip for
/// never lent, lent, after one loan, after two, and whether the loan showed. The partner
/// always has the measured thread's nice of the moment, so that only the thread's own costs
/// differ.
fn round(m: &Arc<Mutex<()>>) -> ([f64; 4], bool) {
    let (mut mine, mut theirs) = UnixStream::pair().unwrap();
    let (tid_tx, tid_rx) = mpsc::channel();
    let partner = thread::spawn(move || {
        pin_to_cpu0();
        set_own_nice(5);
        tid_tx.send(current_tid()).unwrap();
        let mut byte = [0u8; 1];
        while theirs.read_exact(&mut byte).is_ok() {
            if theirs.write_all(&byte).is_err() {
                break;
            }
        }
    });
    let m = Arc::clone(m);
    let partner_tid = tid_rx.recv().unwrap();
    let measured = thread::spawn(move || {
        pin_to_cpu0();
        set_own_nice(5);
        let never = ping_pong(&mut mine);
        let (during, lent) = lent_to(&m, || {
            set_nice(partner_tid, 0);
            ping_pong(&mut mine)
        });
        set_nice(partner_tid, 5);
        let after_one = ping_pong(&mut mine);
        // A second loan: a thread lent to again and again must not keep anything either.
        lent_to(&m, || ());
        let after_two = ping_pong(&mut mine);
        ([never, during, after_one, after_two], lent)
    })
    .join()
    .unwrap();
    partner.join().unwrap();
    measured
}

fn main() {
    let rounds = workloads::rounds_arg(5, "switch_cost");
    set_cpu_donation(CpuDonation::Off);
    let m = Arc::new(Mutex::new(()));
    let mut samples: [Vec<f64>; 4] = Default::default();
    let mut all_lent = true;
    for _ in 0..rounds {
        let (ns, lent) = round(&m);
        all_lent &= lent;
        for (s, v) in samples.iter_mut().zip(ns) {
            s.push(v);
        }
    }
    let [never, during, after_one, after_two] = samples.map(|mut s| workloads::median(&mut s));
    println!(
        "pipe round trip (2 context switches of the measured thread), medians of {rounds} rounds{}",
        if all_lent {
            ""
        } else {
            " (some loans did not happen: no CAP_SYS_NICE?)"
        }
    );
    println!("| thread | ns per round trip | µs per switch beyond never lent |");
    println!("|---|---:|---:|");
    for (label, ns) in [
        ("never lent to", never),
        ("lent to", during),
        ("after one loan ended", after_one),
        ("after two loans ended", after_two),
    ] {
        println!("| {label} | {ns:.0} | {:.2} |", (ns - never) / 2e3);
    }
}
