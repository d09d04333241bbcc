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

# Ctrl-C and kill end the script through its exit, so that the cleanup above runs.
trap 'exit 130' INT
trap 'exit 143' TERM

# install_package PACKAGE: installs a Debian package when this runs as root with apt-get (fetching
# the package lists first on a machine that never did); fails otherwise.
install_package() {
    [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1 || return 1
    echo "$bench_name: installing $1 (apt-get install -y $1)" >&2
    apt-get install -y "$1" >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y "$1" >/dev/null 2>&1; }
}

# free_port: prints a loopback TCP port that was free a moment ago, for a server that cannot bind
# port 0 and write the port it got.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# cpu_ticks PID...: the CPU time the processes have used together, in clock ticks (user + system);
# a process that has ended counts 0.
cpu_ticks() {
    local pid ticks total=0
    for pid in "$@"; do
        ticks=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat" 2>/dev/null) || ticks=0
        total=$((total + ${ticks:-0}))
    done
    echo "$total"
}
# per_request TICKS REQUESTS: microseconds of CPU per request.
per_request() { awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%d", (n > 0 ? t * 1e6 / hz / n : 0) }'; }
# ratio A B: A / B with two decimals, 0 when B is 0.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
# median: the median of the numbers on standard input, separated by spaces or lines.
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# wrk_figures FILE: from the output of `wrk --latency`, prints "REQUESTS_PER_S P99_MS REQUESTS
# NON_2XX SECONDS": the rate over every answer, the 99th percentile in milliseconds, the answers
# counted, those that were not 2xx or 3xx, and the run's length in seconds.
wrk_figures() {
    awk '
        function ms(v) { if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 } if (v ~ /ms$/) { sub(/ms$/, "", v); return v } if (v ~ /m$/) { sub(/m$/, "", v); return v * 60000 } sub(/s$/, "", v); return v * 1000 }
        /Requests\/sec/ { rps = $2 }
        $1 == "99%" { p99 = ms($2) }
        / requests in / { requests = $1; seconds = $4; sub(/s,$/, "", seconds) }
        /Non-2xx or 3xx responses/ { non2xx = $NF }
        END { printf "%d %.2f %d %d %s\n", rps, p99, requests, non2xx, seconds }
    ' "$1"
}
