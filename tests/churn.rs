//! Thread churn leaves nothing behind: 100,000 short-lived threads that lock a shared mutex
//! under contention, some of them lent to, end with the process's memory, open file
//! descriptors and per-thread exit time where the first 10,000 left them. (Each exiting thread
//! used to leave its task record and crossbeam's per-thread state reachable for good, and every
//! later exit walked the growing list: 2.7 KB and ever slower exits per thread.)
//! `examples/thread_churn.rs` runs the full-size version, a million threads.

#[path = "../benches/workloads/churn.rs"]
mod churn;
mod common;

#[test]
fn thread_churn_leaves_nothing_behind() {
    let loans = proxy_lock::capabilities().cap_sys_nice;
    if !loans {
        let why = match proxy_lock::capabilities().unavailable {
            Some(why) => {
                format!("(in part) donation {why}, so no loans; the churn itself still runs")
            }
            None => "(in part) no CAP_SYS_NICE, so no loans; the churn itself still runs".into(),
        };
        common::skip("thread_churn_leaves_nothing_behind", &why);
    }
    let c = churn::run(25_000, 2_500, if loans { 125 } else { 0 });
    eprintln!(
        "churn: {} threads ({} loan rounds); RSS {} kB after the first window, {} kB at the \
         end; fds {} before, {} after; perf rings mapped {} before, {} at most, {} after; µs \
         per thread by window: {:.1?}",
        c.threads,
        c.loan_rounds,
        c.rss_after_first_kb,
        c.rss_end_kb,
        c.fds_before,
        c.fds_end,
        c.maps_before,
        c.maps_peak,
        c.maps_end,
        c.per_thread_us
    );
    assert!(
        c.rss_end_kb <= c.rss_after_first_kb + c.rss_after_first_kb / 4 + 4096,
        "RSS grew from {} to {} kB",
        c.rss_after_first_kb,
        c.rss_end_kb
    );
    assert!(
        c.fds_end <= c.fds_before,
        "{} file descriptors left open; open now: {:?}",
        c.fds_end - c.fds_before,
        churn::fd_targets()
    );
    assert!(
        c.maps_end <= c.maps_before,
        "{} perf rings still mapped",
        c.maps_end - c.maps_before
    );
    let (first, last) = (c.per_thread_us[0], *c.per_thread_us.last().unwrap());
    assert!(
        last <= 3.0 * first + 20.0,
        "thread exits got slower: {first:.1} µs per thread at first, {last:.1} at the end"
    );
}
