//! A user-space analog of `perf bench sched messaging -t`: groups of sender and receiver threads
//! exchanging small messages through bounded queues, each queue one mutex and two condition
//! variables. It measures how a lock behaves when there are far more threads than CPUs.
//!
//! ```text
//! cargo run --release --example hackbench -- -g 2 -l 200 --lock adaptive
//! ```

use std::process::exit;

#[path = "../benches/workloads/mod.rs"]
mod workloads;
use workloads::messaging::{
    self, AdaptivePipe, HandoffPipe, ParkingLotPipe, PthreadPiPipe, RunPipe, SpinPipe, StdPipe,
};

const USAGE: &str = "\
usage: hackbench [options]
  -g, --groups N      groups of senders and receivers (default 10)
  -l, --loops N       messages each sender sends to each receiver (default 100)
  -f, --fds N         senders and receivers per group (default 20)
  -s, --datasize N    bytes per message (default 100)
      --capacity N    bytes each queue holds, like a pipe buffer (default 65536)
      --lock NAME     std | parking_lot | pthread_pi | spin | handoff | adaptive | run
                      (default adaptive); pthread_pi: a PTHREAD_PRIO_INHERIT mutex with a
                      pthread condvar; run: senders push with Mutex::run on a Handoff mutex
      --cpus N        run on the first N CPUs this process may use, like taskset
      --json          print one JSON line instead of perf's text";

struct Args {
    groups: usize,
    loops: usize,
    fds: usize,
    datasize: usize,
    capacity: usize,
    lock: String,
    cpus: Option<usize>,
    json: bool,
}

impl Args {
    fn shape(&self) -> messaging::Shape {
        messaging::Shape {
            groups: self.groups,
            loops: self.loops,
            fds: self.fds,
            datasize: self.datasize,
            capacity: self.capacity,
        }
    }
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        groups: 10,
        loops: 100,
        fds: 20,
        datasize: 100,
        capacity: 65536,
        lock: "adaptive".into(),
        cpus: None,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut num = |name: &str| -> Result<usize, String> {
            let v = it.next().ok_or(format!("{name} needs a value"))?;
            v.parse::<usize>()
                .map_err(|_| format!("{name}: not a number: {v}"))
        };
        match flag.as_str() {
            "-g" | "--groups" => a.groups = num(&flag)?,
            "-l" | "--loops" => a.loops = num(&flag)?,
            "-f" | "--fds" => a.fds = num(&flag)?,
            "-s" | "--datasize" => a.datasize = num(&flag)?,
            "--capacity" => a.capacity = num(&flag)?,
            "--cpus" => a.cpus = Some(num(&flag)?),
            "--lock" => a.lock = it.next().ok_or("--lock needs a value")?,
            "--json" => a.json = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                exit(0)
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if a.groups == 0 || a.fds == 0 || a.datasize == 0 {
        return Err("--groups, --fds and --datasize must be at least 1".into());
    }
    if a.capacity < a.datasize {
        return Err(format!(
            "--capacity {} holds no message of {} bytes",
            a.capacity, a.datasize
        ));
    }
    Ok(a)
}

/// Restricts this process (the calling thread, which every later thread inherits) to the first
/// `n` CPUs it may use now.
fn restrict_cpus(n: usize) -> Result<(), String> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer of the size passed.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) } != 0 {
        return Err(format!(
            "sched_getaffinity: {}",
            std::io::Error::last_os_error()
        ));
    }
    let allowed: Vec<usize> =
        // SAFETY: `set` is initialised; CPU_ISSET reads it within CPU_SETSIZE.
        (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect();
    if n == 0 || n > allowed.len() {
        return Err(format!(
            "--cpus {n}: this process may use {} CPUs",
            allowed.len()
        ));
    }
    // SAFETY: as above.
    let mut want: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in &allowed[..n] {
        // SAFETY: c < CPU_SETSIZE.
        unsafe { libc::CPU_SET(c, &mut want) };
    }
    // SAFETY: valid set pointer of the size passed.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&want), &want) } != 0 {
        return Err(format!(
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

struct Usage {
    user: f64,
    sys: f64,
    voluntary: i64,
    involuntary: i64,
}

fn usage() -> Usage {
    // SAFETY: rusage is plain data and getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer; RUSAGE_SELF counts every thread of the process.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Usage {
        user: secs(ru.ru_utime),
        sys: secs(ru.ru_stime),
        voluntary: ru.ru_nvcsw,
        involuntary: ru.ru_nivcsw,
    }
}

fn main() {
    let a = parse_args().unwrap_or_else(|e| {
        eprintln!("hackbench: {e}\n{USAGE}");
        exit(2)
    });
    if let Some(n) = a.cpus {
        restrict_cpus(n).unwrap_or_else(|e| {
            eprintln!("hackbench: {e}");
            exit(2)
        });
    }
    let before = usage();
    let counted = proxy_lock::counters();
    let secs = match a.lock.as_str() {
        "std" => messaging::run::<StdPipe>(&a.shape()),
        "parking_lot" => messaging::run::<ParkingLotPipe>(&a.shape()),
        "pthread_pi" => messaging::run::<PthreadPiPipe>(&a.shape()),
        "spin" => messaging::run::<SpinPipe>(&a.shape()),
        "handoff" => messaging::run::<HandoffPipe>(&a.shape()),
        "adaptive" => messaging::run::<AdaptivePipe>(&a.shape()),
        "run" => messaging::run::<RunPipe>(&a.shape()),
        other => {
            eprintln!("hackbench: unknown lock {other}\n{USAGE}");
            exit(2)
        }
    };
    let after = usage();
    let c = proxy_lock::counters();
    // Attribute writes made for this run: donations, restores and failed attempts. Between
    // equal threads this must be 0.
    let donation_syscalls = (c.donations + c.restores + c.failed())
        - (counted.donations + counted.restores + counted.failed());
    if a.json {
        println!(
            "{{\"lock\":\"{}\",\"groups\":{},\"loops\":{},\"fds\":{},\"seconds\":{:.6},\"user_s\":{:.3},\"sys_s\":{:.3},\"voluntary_cs\":{},\"involuntary_cs\":{},\"donation_syscalls\":{donation_syscalls},\"sleeps_without_loan\":{},\"attribute_reads\":{},\"proxied\":{}}}",
            a.lock,
            a.groups,
            a.loops,
            a.fds,
            secs,
            after.user - before.user,
            after.sys - before.sys,
            after.voluntary - before.voluntary,
            after.involuntary - before.involuntary,
            c.skipped - counted.skipped,
            c.attribute_reads - counted.attribute_reads,
            c.proxied - counted.proxied
        );
    } else {
        println!("# {} sender and receiver threads per group", a.fds);
        println!(
            "# {} groups == {} threads run",
            a.groups,
            a.groups * a.fds * 2
        );
        println!();
        println!("     Total time: {secs:.3} [sec]");
        if !["std", "parking_lot", "pthread_pi"].contains(&a.lock.as_str()) {
            println!(
                "# proxy_lock: {donation_syscalls} donation syscalls, {} sleeps without a loan, {} attribute reads, {} sections run by proxy",
                c.skipped - counted.skipped,
                c.attribute_reads - counted.attribute_reads,
                c.proxied - counted.proxied
            );
        }
    }
}
