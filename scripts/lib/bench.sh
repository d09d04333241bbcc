# Shared by the benchmark scripts: a work folder removed at exit, the processes started in it
# stopped at exit, and waits for a server's port file and readiness. Source it after `set -euo
# pipefail`; it names errors after the script that sourced it.

bench_name=$(basename "$0")
work=$(mktemp -d -t "stamp-$bench_name.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# wait_for_port FILE PID: prints the port a server wrote to FILE once it listens.
wait_for_port() {
    for _ in $(seq 1 300); do
        [[ -s "$1" ]] && { cat "$1"; return 0; }
        kill -0 "$2" 2>/dev/null || break
        sleep 0.05
    done
    echo "$bench_name: no port in $1" >&2
    exit 1
}

# wait_ready URL: returns once URL answers 2xx.
wait_ready() {
    for _ in $(seq 1 200); do
        curl -fs "$1" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "$bench_name: $1 never answered" >&2
    exit 1
}
