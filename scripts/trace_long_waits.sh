#!/usr/bin/env bash
# Catches a long proxy-lock wait of the inversion demo in a kernel scheduler trace: runs
# `priority_inversion --scenario SCENARIO --trace-stop-us US` round after round, each with a
# fresh ftrace ring of context switches, wake-ups, migrations, local timer interrupts and the
# sched_setattr and futex syscalls, until a round's demo stops the ring at a proxy-lock wait
# over US µs (the ring is then saved) or MINUTES have passed. Needs root and tracefs. Puts the
# ring's events, size and on/off state back when it ends, however it ends.
#
# usage: [DEMO_ARGS="--unprivileged ..."] scripts/trace_long_waits.sh [SCENARIO (rt)] [US (1000)] [MINUTES (30)] [OUT_DIR]
# OUT_DIR (default target/trace_long_waits) gets each round's --json lines and stderr, and the
# trace of the round that caught a wait. Each round's stderr ends with the jiffies of host steal
# counted during it (/proc/stat), which a host stall may or may not show.
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:-rt} us=${2:-1000} minutes=${3:-30} out=${4:-target/trace_long_waits}

T=/sys/kernel/tracing
[ -w "$T/tracing_on" ] || T=/sys/kernel/debug/tracing
[ -w "$T/tracing_on" ] || { echo "no writable tracefs (needs root)" >&2; exit 1; }

cargo build --quiet --release --example priority_inversion
demo=${CARGO_TARGET_DIR:-target}/release/examples/priority_inversion
mkdir -p "$out"

saved_events=$(cat "$T/set_event")
saved_kb=$(cut -d' ' -f1 < "$T/buffer_size_kb") # "7 (expanded: 1408)" before first use
saved_on=$(cat "$T/tracing_on")
restore() {
  echo 0 > "$T/tracing_on"
  echo > "$T/set_event"
  for e in $saved_events; do echo "$e" >> "$T/set_event"; done
  echo "$saved_kb" > "$T/buffer_size_kb"
  echo "$saved_on" > "$T/tracing_on"
}
trap restore EXIT

echo 0 > "$T/tracing_on"
echo > "$T/set_event"
for e in sched:sched_switch sched:sched_wakeup sched:sched_waking sched:sched_migrate_task \
  irq_vectors:local_timer_entry irq_vectors:local_timer_exit \
  syscalls:sys_enter_sched_setattr syscalls:sys_exit_sched_setattr \
  syscalls:sys_enter_futex syscalls:sys_exit_futex; do
  echo "$e" >> "$T/set_event"
done
# 16 MiB per CPU: a whole round of `rt` fits (6.6 s, 5 MB of text, on these machines).
echo 16384 > "$T/buffer_size_kb"

steal() { awk '/^cpu /{print $9}' /proc/stat; }
end=$((SECONDS + minutes * 60))
round=0
while [ "$SECONDS" -lt "$end" ]; do
  round=$((round + 1))
  echo > "$T/trace"
  echo 1 > "$T/tracing_on"
  stolen=$(steal)
  "$demo" --scenario "$scenario" --json --trace-stop-us "$us" --svg "$out/last.svg" ${DEMO_ARGS:-} \
    > "$out/round_$round.json" 2> "$out/round_$round.err"
  echo 0 > "$T/tracing_on"
  echo "host steal: $(($(steal) - stolen)) jiffies" >> "$out/round_$round.err"
  if caught=$(grep "trace stopped" "$out/round_$round.err"); then
    cp "$T/trace" "$out/trace_round_$round.txt"
    echo "round $round: $caught; $(tail -n 1 "$out/round_$round.err"); trace in $out/trace_round_$round.txt"
    exit 0
  fi
done
echo "no proxy-lock wait over $us µs in $round rounds of $scenario"
