#!/usr/bin/env bash
# POP3 benchmark: Mailroom against Dovecot's POP3 server over the same Maildir messages, in one
# run, with one load generator (bench/pop3-load, a small Rust program) for both.
#
#   bench/pop3.sh [SESSIONS] [CONCURRENCY]
#
# 1. 20 messages (1-19 KiB) are sent to Mailroom over SMTP for each of CONCURRENCY users (a
#    mailbox serves one session at a time); Dovecot gets a copy of the same Maildir files.
#    pop3-load runs SESSIONS (default 2000) full sessions, CONCURRENCY (default 8)
#    at once, against each: USER, PASS, STAT, UIDL, TOP n 0 and RETR n of every message, QUIT.
#    Prints sessions/s for both and the ratio (target: Mailroom >= 2x Dovecot).
# 2. A mailbox of 10,000 messages: login + STAT + UIDL must take under 1 s; then TOP n 0 of
#    every message, with the server's RSS growth.
# 3. RETR of a 100 MiB message: the server's peak RSS growth must stay under 32 MiB.
# Needs: dovecot-pop3d (installed by ../shared/peers/dovecot-pop3.sh if missing), python3.
# Everything binds 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
sessions=${1:-2000}
concurrency=${2:-8}

cargo build --release -q
bin=$PWD/target/release/mailroom
load=$PWD/target/release/pop3-load

work=$(mktemp -d)
chmod a+x "$work"
pids=()
cleanup() {
  [ -f "$work/dovecot/run/master.pid" ] && kill "$(cat "$work/dovecot/run/master.pid")" 2>/dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
rss_kib() { awk "/^$1:/ {print \$2}" /proc/"$2"/status; }

# --- Mailroom, with 20 messages delivered over SMTP -------------------------------------------
smtp_port=$(free_port)
pop3_port=$(free_port)
sed -e "s|<port>2525</port>|<port>$smtp_port</port>|" -e "s|<port>1110</port>|<port>$pop3_port</port>|" \
  crates/config/default-config.xml > "$work/config.xml"
# The load comes from one address: no per-client limit.
sed -i 's|<max-connections-per-ip>[0-9]*<|<max-connections-per-ip>0<|' "$work/config.xml"
for user in $(seq -f 'bench%g' "$concurrency") big huge; do
  "$bin" user add "$user" --password bench --config "$work/config.xml" >/dev/null
done
RUST_LOG=info "$bin" --config "$work/config.xml" 2>"$work/mailroom.log" &
mr_pid=$!; pids+=("$mr_pid")
wait_port "$smtp_port"; wait_port "$pop3_port"

inboxes=$work/var/mail/inboxes
python3 - "$smtp_port" "$concurrency" <<'PY'
import smtplib, sys
rcpts = [f"bench{n}@localhost" for n in range(1, int(sys.argv[2]) + 1)]
with smtplib.SMTP("127.0.0.1", int(sys.argv[1])) as s:
    for i in range(20):
        body = "".join(f"message {i:02} line {n:04} {'x' * 56}\r\n" for n in range(12 * (i + 1)))
        msg = (f"From: bench@example.net\r\nTo: bench@localhost\r\nSubject: message {i}\r\n"
               f"Message-ID: <{i}@bench.example>\r\n\r\n.dot-stuffed first line\r\n{body}")
        s.sendmail("bench@example.net", rcpts, msg.encode())
PY
for _ in $(seq 200); do
  [ "$(find "$inboxes"/bench*/new -type f 2>/dev/null | wc -l)" -ge $((20 * concurrency)) ] && break
  sleep 0.05
done

# --- Dovecot over a copy of the same Maildir files --------------------------------------------
dc=$work/dovecot
for n in $(seq "$concurrency"); do
  mkdir -p "$dc/mail/bench$n/new" "$dc/mail/bench$n/cur" "$dc/mail/bench$n/tmp"
  echo "bench$n:{PLAIN}bench" >> "$dc/passwd"
  cp "$inboxes/bench$n"/new/* "$dc/mail/bench$n/new/"
done
dc_port=$(free_port)
../shared/peers/dovecot-pop3.sh "$dc" "$dc_port" >/dev/null
wait_port "$dc_port"

# Warm up both (Dovecot builds its index and moves new/ to cur/ on the first session).
"$load" 127.0.0.1:"$pop3_port" 'bench%' bench "$concurrency" "$concurrency" >/dev/null
"$load" 127.0.0.1:"$dc_port" 'bench%' bench "$concurrency" "$concurrency" >/dev/null

field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p"; }
mr=$("$load" 127.0.0.1:"$pop3_port" 'bench%' bench "$sessions" "$concurrency")
dv=$("$load" 127.0.0.1:"$dc_port" 'bench%' bench "$sessions" "$concurrency")
mr_rate=$(echo "$mr" | field rate); dv_rate=$(echo "$dv" | field rate)
printf 'POP3: %d sessions (USER PASS STAT UIDL, TOP+RETR x 20 messages, QUIT), %d at once\n' "$sessions" "$concurrency"
printf '  Dovecot:   %6.0f sessions/s  (%s octets of mail per session)\n' "$dv_rate" "$(echo "$dv" | field octets_per_session)"
printf '  Mailroom:  %6.0f sessions/s  (%s octets of mail per session)\n' "$mr_rate" "$(echo "$mr" | field octets_per_session)"
printf '  ratio Mailroom / Dovecot: %.2f x   (target >= 2 x)\n' "$(echo "$mr_rate / $dv_rate" | bc -l)"

# --- A mailbox of 10,000 messages --------------------------------------------------------------
# Written straight into the Maildir with Mailroom's file names, as a delivery agent would.
python3 - "$inboxes/big/new" <<'PY'
import os, sys
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
for i in range(10000):
    msg = (f"From: bench@example.net\r\nTo: big@localhost\r\nSubject: message {i}\r\n\r\n"
           + "".join(f"body line {n} of message {i}\r\n" for n in range(40))).encode()
    with open(os.path.join(d, f"{1700000000 + i // 100}.M{i % 100}P1Q{i}.bench,S={len(msg)},W={len(msg)}"), "wb") as f:
        f.write(msg)
PY
# A first login per user runs argon2id (19 MiB while it runs); later ones hit the login cache.
# Log in once beforehand so that the figures below are those of reading mail.
python3 - "$pop3_port" <<'PY'
import poplib, sys
for user in ("big", "huge"):
    p = poplib.POP3("127.0.0.1", int(sys.argv[1]))
    p.user(user); p.pass_("bench"); p.quit()
PY
echo 5 > /proc/"$mr_pid"/clear_refs
before=$(rss_kib VmRSS "$mr_pid")
python3 - "$pop3_port" <<'PY'
import poplib, sys, time
t0 = time.perf_counter()
p = poplib.POP3("127.0.0.1", int(sys.argv[1]))
p.user("big"); p.pass_("bench")
count, size = p.stat()
uids = p.uidl()[1]
t1 = time.perf_counter()
assert count == 10000 and len(uids) == 10000, (count, len(uids))
print(f"10,000-message mailbox: login + STAT + UIDL in {t1 - t0:.3f} s (target < 1 s)")
t0 = time.perf_counter()
for i in range(1, count + 1):
    p.top(i, 0)
t1 = time.perf_counter()
p.quit()
print(f"  TOP n 0 of all 10,000 messages in {t1 - t0:.2f} s")
PY
peak=$(rss_kib VmHWM "$mr_pid")
printf '  server RSS before %d KiB, peak %d KiB, growth %.1f MiB\n' "$before" "$peak" "$(echo "($peak - $before) / 1024" | bc -l)"

# --- RETR of a 100 MiB message -----------------------------------------------------------------
# The 100 MiB message joins huge's (already opened once) mailbox.
python3 - "$inboxes/huge/new" <<'PY'
import os, sys
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
line = b"x" * 76 + b"\r\n"
n = 100 * 1024 * 1024 // len(line)
head = b"From: bench@example.net\r\nTo: huge@localhost\r\nSubject: big\r\n\r\n"
size = len(head) + n * len(line)
with open(os.path.join(d, f"1700000000.M1P1Q1.bench,S={size},W={size}"), "wb") as f:
    f.write(head)
    for _ in range(n):
        f.write(line)
PY
echo 5 > /proc/"$mr_pid"/clear_refs  # reset the peak (VmHWM) to the current RSS
before=$(rss_kib VmRSS "$mr_pid")
python3 - "$pop3_port" <<'PY'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
f = s.makefile("rb")
def cmd(line):
    s.sendall(line + b"\r\n")
    reply = f.readline()
    assert reply.startswith(b"+OK"), reply
    return reply
f.readline()
cmd(b"USER huge"); cmd(b"PASS bench")
size = int(cmd(b"LIST 1").split()[2])
t0 = time.perf_counter()
cmd(b"RETR 1")
got = 0
while True:
    line = f.readline()
    if line == b".\r\n":
        break
    got += len(line)
t1 = time.perf_counter()
cmd(b"QUIT")
assert got == size, (got, size)
print(f"100 MiB RETR: {got} octets in {t1 - t0:.2f} s")
PY
peak=$(rss_kib VmHWM "$mr_pid")
printf '  server RSS before %d KiB, peak %d KiB, growth %.1f MiB (target < 32 MiB)\n' \
  "$before" "$peak" "$(echo "($peak - $before) / 1024" | bc -l)"
