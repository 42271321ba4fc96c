#!/usr/bin/env bash
# Fuzzes the decoders the dashboard points at the outside world (src/fuzzing.rs), with
# cargo-fuzz (libFuzzer). Not part of CI (the short version is tests/fuzz_props.rs).
#
#   scripts/fuzz.sh [RUNS] [TARGET...]     RUNS defaults to 1000000; targets default to all
#
# Targets: envoy_stats envoy_clusters consul_json etcd_json prometheus_api.
# The stable toolchain is pinned (rust-toolchain.toml) and no nightly can be fetched here, so
# libFuzzer's instrumentation flags are allowed with RUSTC_BOOTSTRAP=1. No sanitizer
# (`-s none`): the crate forbids unsafe code, so a memory error would be in a dependency;
# debug assertions are on (`-a`), so an arithmetic overflow is a crash.
# Seeds: the fixtures, cut into line-aligned pieces of at most 4 KiB (and Envoy's two
# scrapes t0/t1 paired with the separator byte, as the target reads them).
# A crash is written to fuzz/artifacts/<target>/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-1000000}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(envoy_stats envoy_clusters consul_json etcd_json prometheus_api)

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1

seed() { # seed TARGET FIXTURE_DIR...
    local target=$1; shift
    local out="fuzz/corpus/$target"
    mkdir -p "$out"
    python3 - "$out" "$@" <<'PY'
import os, sys, hashlib
out, dirs = sys.argv[1], sys.argv[2:]
def put(data):
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
for d in dirs:
    for name in sorted(os.listdir(d)):
        if name.endswith(".md"):
            continue
        data = open(os.path.join(d, name), "rb").read()
        piece = b""
        for line in data.splitlines(keepends=True):
            if len(piece) + len(line) > 4096 and piece:
                put(piece)
                piece = b""
            piece += line[:4096]
        if piece:
            put(piece)
        if name == "stats_prometheus.txt":
            t1 = open(os.path.join(d, "stats_prometheus_t1.txt"), "rb").read()
            a, b = data.splitlines(keepends=True), t1.splitlines(keepends=True)
            for i in range(0, min(len(a), len(b)), 40):
                put(b"".join(a[i:i + 40]) + b"\x0c" + b"".join(b[i:i + 40]))
PY
}

status=0
for t in "${targets[@]}"; do
    case "$t" in
        envoy_stats | envoy_clusters) seed "$t" tests/fixtures/envoy ;;
        consul_json) seed "$t" tests/fixtures/consul ;;
        etcd_json) seed "$t" tests/fixtures/etcd ;;
        prometheus_api) seed "$t" tests/fixtures/prometheus ;;
        *) echo "unknown target $t" >&2; exit 2 ;;
    esac
    echo "== $t: $runs inputs"
    start=$(date +%s)
    if ! (cd fuzz && cargo fuzz run -s none -a "$t" "corpus/$t" -- \
            -runs="$runs" -max_len=8192 -rss_limit_mb=2048 -print_final_stats=1 \
            2>&1 | tee "/tmp/fuzz-$t.log" | grep -E "^(#[0-9]+[[:space:]]+(INITED|DONE)|stat::|==|thread|panicked|SUMMARY)"); then
        status=1
    fi
    grep -q "^Done\|DONE" "/tmp/fuzz-$t.log" || status=1
    echo "== $t: $(( $(date +%s) - start )) s; log /tmp/fuzz-$t.log"
done
exit $status
