#!/usr/bin/env bash
# bench-idle.sh [WARMUP_SECONDS] [MEASURE_SECONDS] [SIZE...]
#
# Idle CPU of the dashboard against a static spine served by another process: for each
# size ("6" = the 6-service demo with its traffic; N = the synthetic mesh of N services,
# 10 instances each), starts `spine-dash demo --serve [--size N]`, runs the dashboard in a
# real window under Xvfb against it (../shared/tools/idle-cpu.sh), and prints the CPU share
# (of one core) and RSS of both processes over the same measuring window.
# Each size is measured twice: with the default view (moving particles on: under Xvfb the
# window counts as focused, so they animate) and with particles off (as when the window is
# not focused). The dashboard starts from a fresh view state (its own XDG data/config dirs).
# Defaults: 20 s warm-up, 30 s measured, sizes 6 and 2000. Builds the release binary first.
# Stops only what it started, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
warm=${1:-20}
meas=${2:-30}
shift $(($# < 2 ? $# : 2))
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(6 2000)
tool=${IDLE_CPU_TOOL:-../shared/tools/idle-cpu.sh}
[ -x "$tool" ] || { echo "idle-cpu tool not found: $tool (set IDLE_CPU_TOOL)" >&2; exit 1; }
target=${CARGO_TARGET_DIR:-target}
cargo build --release --locked --quiet
bin="$target/release/spine-dash"

tmp=$(mktemp -d /tmp/bench-idle.XXXXXX)
demo_pid=""
cleanup() {
  [ -n "$demo_pid" ] && kill -TERM "$demo_pid" 2>/dev/null && wait "$demo_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

ticks() {  # utime+stime of one process (all its threads), in clock ticks
  local f=/proc/$1/stat
  [ -r "$f" ] || { echo 0; return; }
  set -- $(sed 's/^.*) //' "$f"); echo $((${12} + ${13}))
}
rss_mib() { awk '/VmRSS/{printf "%.0f", $2/1024}' "/proc/$1/status" 2>/dev/null || echo 0; }
hz=$(getconf CLK_TCK)

printf '%-28s %-14s %-40s %s\n' "spine" "particles" "dashboard (window, Xvfb)" "demo --serve"
for size in "${sizes[@]}"; do
 for particles in on off; do
  # A fresh view state; "off" starts with particles off (persisted view, serde defaults).
  rm -rf "$tmp/xdg"; mkdir -p "$tmp/xdg/data/spine-dash" "$tmp/xdg/config"
  if [ "$particles" = off ]; then
    printf '{\n    "spine-dash.view": "(particles:false)",\n}\n' >"$tmp/xdg/data/spine-dash/app.ron"
  fi
  export XDG_DATA_HOME="$tmp/xdg/data" XDG_CONFIG_HOME="$tmp/xdg/config"
  if [ "$size" = 6 ]; then args=(); label="demo, 6 services (traffic)"; else
    args=(--size "$size"); label="synthetic, $size services"; fi
  "$bin" demo --serve "${args[@]}" >"$tmp/url" 2>"$tmp/demo.log" &
  demo_pid=$!
  for _ in $(seq 600); do [ -s "$tmp/url" ] && break; sleep 0.1; done
  url=$(head -n1 "$tmp/url")
  [ -n "$url" ] || { echo "demo --serve printed no URL:" >&2; tail "$tmp/demo.log" >&2; exit 1; }
  "$tool" "$warm" "$meas" -- "$bin" --registry "$url" >"$tmp/app.txt" 2>&1 &
  tool_pid=$!
  sleep "$warm"
  t0=$(ticks "$demo_pid"); s0=$(date +%s.%N)
  sleep "$meas"
  t1=$(ticks "$demo_pid"); s1=$(date +%s.%N); rss=$(rss_mib "$demo_pid")
  wait "$tool_pid" || true
  demo_cpu=$(python3 -c "print(f'{100*($t1-$t0)/$hz/($s1-$s0):.1f}')")
  app=$(tail -n1 "$tmp/app.txt")
  printf '%-28s %-14s %-40s %s\n' "$label" "$particles" \
    "$(echo "$app" | sed -E 's/ of one core over .*\), rss/, rss/')" \
    "cpu $demo_cpu%, rss $rss MiB"
  kill -TERM "$demo_pid" 2>/dev/null || true
  wait "$demo_pid" 2>/dev/null || true
  demo_pid=""
 done
done
echo "(cpu: % of one core over the measured window; rss: resident memory at its end)"
