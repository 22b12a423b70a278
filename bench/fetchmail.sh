#!/usr/bin/env bash
# FetchMail benchmark: Mailroom's FetchMail against Debian's fetchmail 6, pulling the same
# mailbox from the same Dovecot POP3 server into the same Mailroom, in one run.
#
#   bench/fetchmail.sh [MESSAGES] [SIZE] [mailroom]   (mailroom: time Mailroom only)
#
# Dovecot serves two accounts holding the same MESSAGES (default 10,000) messages of SIZE
# (default 4096) octets each, in Maildirs on loopback (warmed up: its index is built first).
#  * Mailroom: a <fetch> task pulls account `mr` (delete after fetching) into the spool, which
#    delivers to bob's Maildir. Timed from the server's start (the task's start-up run) until
#    every message is in bob's Maildir and gone from Dovecot.
#  * fetchmail 6 pulls account `fm` (`no keep`, `fetchall`) and hands each message to the same
#    Mailroom's SMTP server for carol (fetchmail's default, its SMTP forwarding): the same end
#    state (a Maildir file behind Mailroom's spool) and the same durability (fetchmail deletes
#    a message only after the 250 of a spool that fsyncs before it answers). An MDA writing the
#    Maildir directly would skip the spool, the processor tree and every fsync, so it would
#    measure less work, not a faster puller. Timed from fetchmail's start until every message
#    is in carol's Maildir and gone from Dovecot.
# Prints both times, messages/s and the ratio (target: Mailroom >= 2x fetchmail).
# Needs: dovecot-pop3d, fetchmail, python3. Everything binds 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-10000}
size=${2:-4096}
only=${3:-}

command -v fetchmail >/dev/null || { apt-get update -q >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -q fetchmail >/dev/null; }
cargo build --release -q -p mailroom
bin=$PWD/target/release/mailroom

# A new top-level directory, as in smtp-ingest.sh (ext4's Orlov allocator; see the README).
work=$(mktemp -d /mailroom-bench.XXXXXX)
chmod 755 "$work"
dc=$work/dovecot
pids=()
cleanup() {
  [ -f "$dc/run/master.pid" ] && kill "$(cat "$dc/run/master.pid")" 2>/dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
count() { find "$@" -type f 2>/dev/null | wc -l; }
now() { date +%s.%N; }
# Waits until DIR's new/ holds $messages files and Dovecot's ACCOUNT is empty; prints the time.
wait_done() {
  local inbox=$1 account=$2
  while [ "$(count "$inbox/new")" -lt "$messages" ] \
    || [ "$(count "$dc/mail/$account/new" "$dc/mail/$account/cur")" -gt 0 ]; do
    sleep 0.02
  done
  now
}

# --- Dovecot: two accounts with the same messages ---------------------------------------------
for account in mr fm; do
  mkdir -p "$dc/mail/$account/new" "$dc/mail/$account/cur" "$dc/mail/$account/tmp"
  echo "$account:{PLAIN}bench" >> "$dc/passwd"
done
python3 - "$dc/mail" "$messages" "$size" <<'PY'
import os, sys
root, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    head = (f"Return-Path: <sender@example.net>\r\nFrom: sender@example.net\r\nTo: someone@example.net\r\n"
            f"Subject: message {i}\r\nMessage-ID: <{i}@bench.example>\r\n\r\n")
    line = f"message {i:05} " + "x" * 60 + "\r\n"
    body = line * max(0, (size - len(head)) // len(line))
    pad = size - len(head) - len(body)
    body += ("y" * (pad - 2) + "\r\n") if pad >= 3 else ""
    data = (head + body).encode()
    for account in ("mr", "fm"):
        with open(os.path.join(root, account, "new", f"{1700000000 + i}.M{i}P1.bench"), "wb") as f:
            f.write(data)
PY
dc_port=$(free_port)
../shared/peers/dovecot-pop3.sh "$dc" "$dc_port" >/dev/null
wait_port "$dc_port"
# Warm-up: Dovecot indexes both mailboxes (and moves new/ to cur/) before anything is timed.
python3 - "$dc_port" <<'PY'
import poplib, sys
for account in ("mr", "fm"):
    p = poplib.POP3("127.0.0.1", int(sys.argv[1]))
    p.user(account); p.pass_("bench"); p.uidl(); p.list(); p.quit()
PY

# --- Mailroom: FetchMail pulls `mr` for bob from its start ------------------------------------
smtp_port=$(free_port)
sed -e "s|<port>2525</port>|<port>$smtp_port</port>|" -e "s|<port>5587</port>|<port>$(free_port)</port>|" \
  -e "s|<port>1110</port>|<port>$(free_port)</port>|" -e "s|<port>1119</port>|<port>$(free_port)</port>|" \
  -e "s|<port>4555</port>|<port>$(free_port)</port>|" \
  -e "s|</config>|<fetchmail enabled=\"true\"><fetch name=\"bench\"><host>127.0.0.1</host><port>$dc_port</port><interval>86400000</interval><javaMailProperties><property name=\"mail.pop3.starttls.enable\" value=\"false\"/></javaMailProperties><accounts><account user=\"mr\" password=\"bench\" recipient=\"bob@localhost\" ignorercpt-header=\"true\"/></accounts><fetched leaveonserver=\"false\" markseen=\"false\"/></fetch></fetchmail></config>|" \
  crates/config/default-config.xml > "$work/config.xml"
# The load comes from one address: no per-client limit.
sed -i 's|<max-connections-per-ip>[0-9]*<|<max-connections-per-ip>0<|' "$work/config.xml"
for user in bob carol; do
  "$bin" user add "$user" --password bench --config "$work/config.xml" >/dev/null
done
inboxes=$work/var/mail/inboxes
t0=$(now)
RUST_LOG=info "$bin" --config "$work/config.xml" 2>"$work/mailroom.log" &
pids+=("$!")
t1=$(wait_done "$inboxes/bob" mr)
mr_secs=$(echo "$t1 - $t0" | bc -l)
grep -q "fetch run done.*fetched=$messages " "$work/mailroom.log" \
  || { echo "Mailroom's run did not fetch $messages messages:" >&2; grep "fetch run done\|fetch failed" "$work/mailroom.log" >&2; exit 1; }

if [ "$only" = mailroom ]; then
  printf 'Mailroom FetchMail: %d messages of %d octets in %.2f s (%.0f messages/s)\n' \
    "$messages" "$size" "$mr_secs" "$(echo "$messages / $mr_secs" | bc -l)"
  exit 0
fi

# --- fetchmail 6: pulls `fm` into the same Mailroom's SMTP for carol --------------------------
wait_port "$smtp_port"
cat > "$work/fetchmailrc" <<RC
set no bouncemail
set no syslog
poll 127.0.0.1 port $dc_port protocol pop3
  user "fm" password "bench" is "carol" here
  sslproto '' no keep fetchall
  smtphost 127.0.0.1/$smtp_port smtpaddress localhost
RC
chmod 600 "$work/fetchmailrc"
t0=$(now)
FETCHMAILHOME=$work fetchmail -f "$work/fetchmailrc" --pidfile "$work/fetchmail.pid" -s \
  >"$work/fetchmail.log" 2>&1 || { echo "fetchmail failed:" >&2; tail -5 "$work/fetchmail.log" >&2; exit 1; }
t1=$(wait_done "$inboxes/carol" fm)
fm_secs=$(echo "$t1 - $t0" | bc -l)

printf 'FetchMail: %d messages of %d octets from Dovecot (POP3, loopback) into Mailroom'"'"'s Maildir, deleted on Dovecot\n' "$messages" "$size"
printf '  fetchmail 6 -> SMTP:   %7.2f s  %7.0f messages/s\n' "$fm_secs" "$(echo "$messages / $fm_secs" | bc -l)"
printf '  Mailroom FetchMail:    %7.2f s  %7.0f messages/s\n' "$mr_secs" "$(echo "$messages / $mr_secs" | bc -l)"
printf '  ratio Mailroom / fetchmail: %.2f x   (target >= 2 x)\n' "$(echo "$fm_secs / $mr_secs" | bc -l)"
