#!/usr/bin/env bash
# NNTP benchmark: Mailroom against INN 2.7 (Debian's inn2), in one run, with one load generator
# (bench/nntp-load, a small Rust program) for both.
#
#   bench/nntp.sh [SESSIONS] [POSTS] [CONCURRENCY]
#
# 1. POST rate: POSTS (default 4000) articles of about 1 KiB, CONCURRENCY (default 8)
#    connections at once, into one group of each server (Mailroom acknowledges each only once
#    it is durable; INN's default does not fsync articles).
# 2. Reader sessions per second: SESSIONS (default 2000 for Mailroom, a tenth for INN, which
#    is slow) sessions, CONCURRENCY at once: connect, MODE READER, GROUP, OVER of the last 100
#    articles, ARTICLE x10, QUIT. Target: Mailroom >= 10x INN for readers, >= INN for posting.
# 3. A 100,000-article group (Mailroom only, written by posting): OVER of the last 100, timed.
#
# POST_RUNS=N bench/nntp.sh: only the POST part, N times, alternating Mailroom and INN (a sync
# and a pause before each run), every run printed, then the ratio of the medians.
#
# INN must be installed (apt-get install inn2) and configured once: `domain:` set in
# /etc/news/inn.conf, `port: 11119` and `bindaddress: 127.0.0.1` (never 119 or 1119, which
# tests use), then `dpkg --configure -a`. This script starts it (rc.news as user news) when
# nothing listens on INN_PORT, creates the group, and leaves it running. Everything binds
# 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
sessions=${1:-2000}
posts=${2:-4000}
concurrency=${3:-8}
inn_port=${INN_PORT:-11119}
group=bench.test

cargo build --release -q -p mailroom -p nntp-load
bin=$PWD/target/release/mailroom
load=$PWD/target/release/nntp-load

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
rate() { sed -E 's/.*rate=([0-9]+).*/\1/'; }

# --- INN ---------------------------------------------------------------------------------------
if ! (exec 3<>/dev/tcp/127.0.0.1/"$inn_port") 2>/dev/null; then
  grep -q "^port: *$inn_port" /etc/news/inn.conf || { echo "set port: $inn_port in /etc/news/inn.conf" >&2; exit 1; }
  su news -s /bin/sh -c /usr/lib/news/bin/rc.news >/dev/null 2>&1 &
  wait_port "$inn_port"
fi
su news -s /bin/sh -c "/usr/lib/news/bin/ctlinnd newgroup $group y" >/dev/null 2>&1 || true

# --- Mailroom ----------------------------------------------------------------------------------
port=$(free_port)
sed -e "s|<port>2525</port>|<port>$(free_port)</port>|" -e "s|<port>1110</port>|<port>$(free_port)</port>|" \
  -e "s|<port>1119</port>|<port>$port</port>|" -e "s|<port>4555</port>|<port>$(free_port)</port>|" \
  -e "s|<newsgroups/>|<newsgroups><newsgroup>$group</newsgroup><newsgroup>bench.big</newsgroup></newsgroups>|" \
  crates/config/default-config.xml > "$work/config.xml"
# The load comes from one address: no per-client limit.
sed -i 's|<max-connections-per-ip>[0-9]*<|<max-connections-per-ip>0<|' "$work/config.xml"
RUST_LOG=warn "$bin" --config "$work/config.xml" --home "$work" 2>"$work/mailroom.log" &
pids+=($!)
wait_port "$port"

if [ -n "${POST_RUNS:-}" ]; then
  echo "== POST, $posts articles, $concurrency connections, $POST_RUNS alternating runs"
  m_rates=(); i_rates=()
  for run in $(seq "$POST_RUNS"); do
    sync; sleep 2
    m=$("$load" post 127.0.0.1:"$port" "$group" "$posts" "$concurrency" | rate)
    sync; sleep 2
    i=$("$load" post 127.0.0.1:"$inn_port" "$group" "$posts" "$concurrency" | rate)
    echo "run $run: mailroom $m/s  inn $i/s  ratio $(python3 -c "print(f'{$m/$i:.2f}')")"
    m_rates+=("$m"); i_rates+=("$i")
  done
  python3 - "${m_rates[*]}" "${i_rates[*]}" <<'PY'
import statistics, sys
m = [float(x) for x in sys.argv[1].split()]
i = [float(x) for x in sys.argv[2].split()]
print(f"median: mailroom {statistics.median(m):.0f}/s, inn {statistics.median(i):.0f}/s, "
      f"ratio {statistics.median(m)/statistics.median(i):.2f}x; runs at >= 1x: "
      f"{sum(a >= b for a, b in zip(m, i))} of {len(m)}")
PY
  exit 0
fi

echo "== POST, $posts articles, $concurrency connections"
m_post=$("$load" post 127.0.0.1:"$port" "$group" "$posts" "$concurrency"); echo "mailroom: $m_post"
i_post=$("$load" post 127.0.0.1:"$inn_port" "$group" "$posts" "$concurrency"); echo "inn:      $i_post"
sleep 1 # INN files overview data asynchronously
echo "== reader sessions (GROUP + OVER last 100 + ARTICLE x10 + QUIT), $concurrency at once"
m_read=$("$load" read 127.0.0.1:"$port" "$group" "$sessions" "$concurrency"); echo "mailroom: $m_read"
inn_sessions=$(( sessions / 10 > 50 ? sessions / 10 : 50 ))
i_read=$("$load" read 127.0.0.1:"$inn_port" "$group" "$inn_sessions" "$concurrency"); echo "inn:      $i_read"
python3 - "$(echo "$m_post" | rate)" "$(echo "$i_post" | rate)" "$(echo "$m_read" | rate)" "$(echo "$i_read" | rate)" <<'PY'
import sys
mp, ip, mr, ir = map(float, sys.argv[1:])
print(f"posting: mailroom/inn = {mp/ip:.2f}x (target >= 1)")
print(f"readers: mailroom/inn = {mr/ir:.1f}x (target >= 10)")
PY

echo "== 100,000 articles in bench.big (posted), then OVER of the last 100"
"$load" post 127.0.0.1:"$port" bench.big 100000 32 >/dev/null
python3 - "$port" <<'PY'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
f = s.makefile("rb")
f.readline()
s.sendall(b"GROUP bench.big\r\n"); high = int(f.readline().split()[3])
best = None
for _ in range(20):
    t = time.perf_counter()
    s.sendall(b"OVER %d-%d\r\n" % (high - 99, high)); f.readline()
    n = 0
    while f.readline() != b".\r\n": n += 1
    d = time.perf_counter() - t
    best = d if best is None else min(best, d)
assert n == 100, n
print(f"OVER of the last 100 of {high}: {best*1000:.2f} ms (best of 20, round trip included)")
PY
