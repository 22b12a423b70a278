#!/usr/bin/env bash
# SMTP ingest benchmark: Mailroom (delivering to Maildir with fsync) against Postfix's
# smtp-sink (accepts and discards: the protocol's upper bound on this machine), in one run.
#
#   bench/smtp-ingest.sh [MESSAGES] [SESSIONS] [ROUNDS]
#
# 1. smtp-source sends MESSAGES (default 10000) messages of 1 KiB over SESSIONS (default 10)
#    sessions to each, in ROUNDS (default 3) alternating rounds; prints each round, the median
#    rates and their ratio, and checks every message reached the Maildir. (A single round
#    swings by 10-20 % on a shared VM; the median of alternating rounds is steadier.)
# 2. One 100 MiB message through SMTP; prints the server's peak RSS growth.
# Needs: postfix (smtp-source, smtp-sink), python3. Everything binds 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-10000}
sessions=${2:-10}
rounds=${3:-3}

if ! command -v smtp-source >/dev/null; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >/dev/null
fi
export PATH=$PATH:/usr/sbin
cargo build --release -q
bin=$PWD/target/release/mailroom

# A top-level directory gets its inodes from a block group of its own (ext4 Orlov
# allocator), away from the files that tests and earlier runs deleted under /tmp: without a
# journal, ext4 skips inodes deleted in the last minute one by one on every file creation,
# which measures the machine's recent history rather than Mailroom.
work=$(mktemp -d /mailroom-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
now() { date +%s.%N; }
rss_kib() { awk "/^$1:/ {print \$2}" /proc/"$2"/status; }

mr_port=$(free_port)
sed -e "s|<port>2525</port>|<port>$mr_port</port>|" -e 's|<maxmessagesize>[0-9]*</maxmessagesize>|<maxmessagesize>0</maxmessagesize>|' \
  crates/config/default-config.xml > "$work/config.xml"
# The load comes from one address: no per-client limit.
sed -i 's|<max-connections-per-ip>[0-9]*<|<max-connections-per-ip>0<|' "$work/config.xml"
"$bin" user add bench --password bench --config "$work/config.xml" >/dev/null
RUST_LOG=warn "$bin" --config "$work/config.xml" 2>"$work/mailroom.log" &
mr_pid=$!; pids+=("$mr_pid")
wait_port "$mr_port"

sink_port=$(free_port)
smtp-sink -u nobody -c 127.0.0.1:"$sink_port" 256 >/dev/null 2>&1 &
pids+=("$!")
wait_port "$sink_port"

run_source() { # port -> seconds
  local t0 t1
  t0=$(now)
  smtp-source -s "$sessions" -l 1024 -m "$messages" -f bench@example.net -t bench@localhost 127.0.0.1:"$1"
  t1=$(now)
  echo "$t1 - $t0" | bc -l
}

inbox=$work/var/mail/inboxes/bench/new
count() { find "$inbox" -type f 2>/dev/null | wc -l; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
sink_rates=(); mr_rates=(); drains=()
for round in $(seq "$rounds"); do
  sink_s=$(run_source "$sink_port")
  mr_s=$(run_source "$mr_port")
  sink_rates+=("$(echo "$messages / $sink_s" | bc -l)")
  mr_rates+=("$(echo "$messages / $mr_s" | bc -l)")
  # Let the spool deliver this round before the next one starts.
  t0=$(now)
  for _ in $(seq 600); do
    [ "$(count)" -ge $((round * messages)) ] && break
    sleep 0.1
  done
  drains+=("$(echo "$(now) - $t0" | bc -l)")
  printf '  round %d: smtp-sink %6.0f msg/s, Mailroom %6.0f msg/s\n' "$round" "${sink_rates[-1]}" "${mr_rates[-1]}"
done
delivered=$(count)
total=$((rounds * messages))
sink_rate=$(median "${sink_rates[@]}")
mr_rate=$(median "${mr_rates[@]}")

printf 'SMTP ingest: %d messages x 1 KiB over %d sessions, median of %d rounds\n' "$messages" "$sessions" "$rounds"
printf '  smtp-sink (no storage):      %8.0f msg/s\n' "$sink_rate"
printf '  Mailroom (fsync to spool):   %8.0f msg/s\n' "$mr_rate"
printf '  ratio Mailroom / smtp-sink:  %8.1f %%   (target >= 40 %%)\n' "$(echo "100 * $mr_rate / $sink_rate" | bc -l)"
printf '  delivered to Maildir:        %8d of %d (at most %.1f s after the last 250 of a round)\n' \
  "$delivered" "$total" "$(printf '%s\n' "${drains[@]}" | sort -g | tail -1)"
[ "$delivered" -ge "$total" ] || { echo "  MISSING MESSAGES" >&2; exit 1; }

# One 100 MiB message: memory must stay bounded (bodies stream to disk).
python3 - "$work/big.eml" <<'PY'
import sys
with open(sys.argv[1], "wb") as f:
    f.write(b"From: bench@example.net\r\nTo: bench@localhost\r\nSubject: big\r\n\r\n")
    line = b"x" * 76 + b"\r\n"
    for _ in range(100 * 1024 * 1024 // len(line)):
        f.write(line)
PY
echo 5 > /proc/"$mr_pid"/clear_refs  # reset the peak (VmHWM) to the current RSS
before=$(rss_kib VmRSS "$mr_pid")
python3 - "$mr_port" "$work/big.eml" <<'PY'
import smtplib, sys
with open(sys.argv[2], "rb") as f, smtplib.SMTP("127.0.0.1", int(sys.argv[1])) as s:
    s.sendmail("bench@example.net", ["bench@localhost"], f.read())
PY
for _ in $(seq 600); do
  [ "$(count)" -gt "$total" ] && break
  sleep 0.1
done
peak=$(rss_kib VmHWM "$mr_pid")
printf '100 MiB message: RSS before %d KiB, peak %d KiB, growth %.1f MiB (target < 32 MiB)\n' \
  "$before" "$peak" "$(echo "($peak - $before) / 1024" | bc -l)"
