#!/usr/bin/env bash
# The project's whole test run: what CI runs, and what the README gives as the test command.
# Build, fmt and clippy (-D warnings), a check that the library builds with the MSRV (skipped
# if rustup cannot install it), unit + doc + integration tests (std conformance, stress,
# chains, donation with real attributes, deadlocks, Mutex::run, the torture test), the same
# suites without the donation feature (the portable path), `cargo check` for six other
# targets, memcheck runs, the loom models with a bounded preemption count (and again without
# donation), bench compilation, smoke runs of hackbench and the demo, and the
# benchmark smoke (bench_report --smoke), which fails on order-of-magnitude regressions.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Tests that skip for a missing privilege (CAP_SYS_NICE, perf events, ...) still pass in cargo's
# summary; each one also appends a line here, and the run prints them (see `skipped`).
export PROXY_LOCK_SKIP_LOG="$PWD/target/skipped-tests.txt"
mkdir -p target
: > "$PROXY_LOCK_SKIP_LOG"
skipped() {
  local n
  n=$(wc -l < "$PROXY_LOCK_SKIP_LOG")
  if [ "$n" -eq 0 ]; then
    echo "skipped tests: none"
  else
    echo "skipped tests: $n (they passed without checking what they are for):"
    sed 's/^/  /' "$PROXY_LOCK_SKIP_LOG"
  fi
}

# Builds integration test $1 (with toolchain $2, e.g. +nightly, and further `cargo test`
# arguments after it) and prints its executable's path.
test_binary() {
  local name=$1 toolchain=${2:-}
  shift $(($# < 2 ? $# : 2))
  # shellcheck disable=SC2086 # an empty toolchain must vanish
  cargo $toolchain test --release --test "$name" "$@" --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1
}

step "toolchain components"
if command -v rustup >/dev/null 2>&1; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || echo "rustup could not add rustfmt/clippy; using what is installed"
fi

step "build (all targets)"
cargo build --all-targets

step "fmt"
cargo fmt --all -- --check

step "clippy"
cargo clippy --all-targets -- -D warnings

# The MSRV is Cargo.toml's rust-version. A machine that cannot get the toolchain (no rustup, no
# network) skips the check with a message, also in the skip log; a failing check fails the run.
msrv=$(sed -n 's/^rust-version *= *"\([^"]*\)".*/\1/p' Cargo.toml)
[ -n "$msrv" ] || { echo "Cargo.toml declares no rust-version"; exit 1; }
step "MSRV: the library builds with Rust $msrv (cargo +$msrv check --lib)"
msrv_skipped() {
  echo "MSRV check skipped: $1"
  echo "msrv check (cargo +$msrv check --lib): $1" >> "$PROXY_LOCK_SKIP_LOG"
}
if ! command -v rustup >/dev/null 2>&1; then
  msrv_skipped "rustup is not installed"
elif ! rustup toolchain list | grep "^$msrv-" >/dev/null &&
  ! msrv_out=$(rustup toolchain install "$msrv" --profile minimal 2>&1); then
  msrv_skipped "rustup toolchain install $msrv failed: $(grep -m 1 '^error' <<< "$msrv_out" || tail -n 1 <<< "$msrv_out")"
else
  CARGO_TARGET_DIR=target/msrv cargo "+$msrv" check --lib
fi

step "unit, doc and integration tests (release)"
cargo test --release -- --skip torture

step "the portable path on Linux: every suite without the donation feature (--no-default-features)"
# The build every other OS gets: same locks, nothing lent. Its own target dir keeps the main
# build's artefacts. Suites that need real donation compile out (cfg(donates)).
CARGO_TARGET_DIR=target/nodon cargo clippy --all-targets --no-default-features -- -D warnings
CARGO_TARGET_DIR=target/nodon cargo test --release --no-default-features -- --skip torture

step "other targets: cargo check --lib --all-features, and cargo doc for one that is not Linux"
# Targets rustup cannot install here are reported and skipped, never failed.
for target in x86_64-apple-darwin x86_64-pc-windows-gnu x86_64-unknown-linux-musl \
  i686-unknown-linux-gnu aarch64-unknown-linux-gnu x86_64-unknown-freebsd; do
  if ! command -v rustup >/dev/null 2>&1; then
    echo "$target: skipped (rustup is not installed)"
    echo "cargo check --target $target: rustup is not installed" >> "$PROXY_LOCK_SKIP_LOG"
    continue
  fi
  if ! rustup target list --installed | grep -qx "$target" &&
    ! add_out=$(rustup target add "$target" 2>&1); then
    echo "$target: skipped (rustup target add failed: $(tail -n 1 <<< "$add_out"))"
    echo "cargo check --target $target: rustup target add failed" >> "$PROXY_LOCK_SKIP_LOG"
    continue
  fi
  echo "$target"
  CARGO_TARGET_DIR=target/cross cargo check --quiet --lib --all-features --target "$target"
  if [ "$target" = x86_64-unknown-freebsd ]; then
    RUSTDOCFLAGS="-D warnings" CARGO_TARGET_DIR=target/cross \
      cargo doc --quiet --no-deps --lib --target "$target"
  fi
done

step "torture test for TORTURE_SECS=${TORTURE_SECS:-120} s (its locktorture summary is printed)"
TORTURE_SECS="${TORTURE_SECS:-120}" cargo test --release --test torture -- --nocapture
skipped

step "memcheck: task-record reclamation, thread-exit paths, sections run on borrowed stacks"
if command -v valgrind >/dev/null 2>&1; then
  memcheck() { # test-binary-name filter
    local bin
    bin=$(test_binary "$1")
    valgrind --error-exitcode=9 --leak-check=no -q "$bin" "$2" --test-threads=1
  }
  memcheck stress records_survive_readers_while_threads_exit
  memcheck chain snapshots_never_read_freed_locks
  memcheck std_api lock_in_thread_local_destructor
  memcheck std_api lock_in_pthread_key_destructor_after_record_is_gone
  memcheck std_api guard_forgotten_by_exiting_thread
  memcheck run returns_results_and_borrows_the_callers_stack
  memcheck run panic_in_a_proxied_section_reaches_its_caller_only
  memcheck deadlock a_withdrawn_section_outlives_its_thread
else
  echo "valgrind not installed: memcheck runs skipped"
fi

step "LeakSanitizer: the torture test for 20 s (needs a nightly toolchain: -Zsanitizer is unstable)"
if command -v rustup >/dev/null 2>&1 && rustup toolchain list | grep -q '^nightly'; then
  # --target: instrument the test, not the build scripts and proc macros.
  lsan_bin=$(RUSTFLAGS="-Zsanitizer=leak" CARGO_TARGET_DIR=target/lsan \
    test_binary torture +nightly --target "$(rustc -vV | sed -n 's/^host: //p')")
  [ -n "$lsan_bin" ] || { echo "the LeakSanitizer build of the torture test failed"; exit 1; }
  # A leak makes the run exit non-zero (23) with LeakSanitizer's report.
  TORTURE_SECS=20 "$lsan_bin" --nocapture
else
  echo "no nightly toolchain here: LeakSanitizer run skipped (see docs/testing.md)"
fi

step "loom: clippy on the loom build"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo clippy --lib --test loom -- -D warnings

step "loom models (LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-3})"
# --nocapture: each model prints how many interleavings it explored.
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}" \
  cargo test --release --test loom -- --nocapture

step "loom models of the portable path (--no-default-features, LOOM_MAX_PREEMPTIONS=2)"
# The lock word, handoff, Condvar and run protocols with nothing lent; the donation models
# compile out. Bound 2 keeps this within a few minutes.
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom-nodon LOOM_MAX_PREEMPTIONS=2 \
  cargo test --release --no-default-features --test loom -- --nocapture

step "benches compile"
cargo bench --no-run

step "hackbench smoke run (every lock)"
for lock in std parking_lot pthread_pi spin handoff adaptive run; do
  cargo run --quiet --release --example hackbench -- -g 1 -l 50 --lock "$lock" --json
done

step "inversion demo smoke run"
cargo run --quiet --release --example priority_inversion -- --seconds 0.3
# --json: one object per (scenario, lock), five locks.
lines=$(cargo run --quiet --release --example priority_inversion -- --json --scenario direct --seconds 0.2 | grep -c '"scenario":"direct"')
[ "$lines" -eq 5 ] || { echo "priority_inversion --json printed $lines lines, expected 5"; exit 1; }
lines=$(cargo run --quiet --release --example priority_inversion -- --json --scenario rwlock-readers --seconds 0.2 | grep -c '"scenario":"rwlock-readers"')
[ "$lines" -eq 4 ] || { echo "priority_inversion --json --scenario rwlock-readers printed $lines lines, expected 4"; exit 1; }
# --unprivileged: CAP_SYS_NICE dropped, CPU loans only, said once; the locks still run.
out=$(cargo run --quiet --release --example priority_inversion -- --unprivileged --json --scenario direct --seconds 0.2 2>&1)
[ "$(grep -c '"scenario":"direct"' <<< "$out")" -eq 5 ] && [ "$(grep -c 'can lend CPUs only' <<< "$out")" -eq 1 ] ||
  { echo "priority_inversion --unprivileged: unexpected output: $out"; exit 1; }
# A bad --trace-stop-us is refused with a message and exit code 2, before anything runs.
rc=0
msg=$(cargo run --quiet --release --example priority_inversion -- --trace-stop-us 1e300 2>&1) || rc=$?
[ "$rc" -eq 2 ] && grep -q "not a number of µs" <<< "$msg" ||
  { echo "priority_inversion --trace-stop-us 1e300: exit $rc, said: $msg"; exit 1; }

step "benchmark smoke: order-of-magnitude regressions only (docs/testing.md)"
cargo build --quiet --release --examples
target/release/examples/bench_report --smoke

step "cpu stall probe smoke run"
cargo run --quiet --release --example cpu_stalls -- --seconds 0.2 --tick-us 4000

step "done"
skipped
