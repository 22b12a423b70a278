#!/usr/bin/env bash
# Remote delivery benchmark: Mailroom (RemoteDelivery through a <gateway>) against a full
# Postfix (relayhost), both accepting mail over SMTP and relaying it to one Postfix smtp-sink,
# in one run.
#
#   bench/remote-delivery.sh [MESSAGES] [DOMAINS] [THREADS] [ROUNDS]
#
# smtp-source sends MESSAGES (default 10000) messages of 1 KiB, spread over DOMAINS (default
# 10) remote domains (one smtp-source per domain, one session each, a connection per message),
# to each server in ROUNDS (default 3) alternating rounds. Each server relays them to the same
# smtp-sink; a round's time runs from the first submission to the sink's last message (the
# sink's own counter, `smtp-sink -c`). Mailroom runs the default tree with RemoteDelivery's
# <deliveryThreads> set to THREADS (default 8) and a <gateway> on the sink; Postfix 3.x runs
# from a config directory of its own under the work directory (relayhost = the sink, queue
# files fsynced as Postfix always does, no TLS). Prints each round, the median rates and
# their ratio (target: Mailroom >= Postfix).
# Needs: postfix (installed if missing; the system instance is neither used nor touched),
# python3, root (Postfix's master starts as root). Everything binds 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-10000}
domains=${2:-10}
threads=${3:-8}
rounds=${4:-3}
[ $((messages % domains)) -eq 0 ] || { echo "MESSAGES must be a multiple of DOMAINS" >&2; exit 2; }

if ! command -v smtp-source >/dev/null && ! [ -x /usr/sbin/smtp-source ]; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >/dev/null
fi
export PATH=$PATH:/usr/sbin
cargo build --release -q
bin=$PWD/target/release/mailroom

# A new top-level directory, as in smtp-ingest.sh (ext4's Orlov allocator; see the README).
work=$(mktemp -d /mailroom-bench.XXXXXX)
chmod 755 "$work"
pf=$work/postfix  # config in $pf/etc, queue and data beside it
pids=()
cleanup() {
  [ -f "$pf/etc/main.cf" ] && postfix -c "$pf/etc" stop >/dev/null 2>&1 || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
now() { date +%s.%N; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

# --- The sink: counts messages (mesg=N), discards them -----------------------------------------
sink_port=$(free_port)
smtp-sink -u nobody -c 127.0.0.1:"$sink_port" 256 >"$work/sink.out" 2>"$work/sink.err" &
pids+=("$!")
wait_port "$sink_port"
sink_count() { tail -c 200 "$work/sink.out" | tr '\r' '\n' | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -1 | grep . || echo 0; }

# --- Mailroom: the default tree, RemoteDelivery through the sink as its gateway ----------------
mr_port=$(free_port)
sed -e "s|<port>2525</port>|<port>$mr_port</port>|" \
  -e "s|<deliveryThreads>[0-9]*</deliveryThreads>|<deliveryThreads>$threads</deliveryThreads><gateway>127.0.0.1:$sink_port</gateway>|" \
  crates/config/default-config.xml > "$work/config.xml"
# The load comes from one address: no per-client limit.
sed -i 's|<max-connections-per-ip>[0-9]*<|<max-connections-per-ip>0<|' "$work/config.xml"
grep -q "<gateway>127.0.0.1:$sink_port</gateway>" "$work/config.xml"
RUST_LOG=warn "$bin" --config "$work/config.xml" 2>"$work/mailroom.log" &
pids+=("$!")
wait_port "$mr_port"

# --- Postfix: a private instance on loopback, relaying everything to the sink -----------------
pf_port=$(free_port)
mkdir -p "$pf/etc" "$pf/queue" "$pf/data"
chown postfix "$pf/data"
version=$(postconf -h -d mail_version)
cat > "$pf/etc/main.cf" <<EOF
compatibility_level = ${version%.*}
queue_directory = $pf/queue
data_directory = $pf/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix-bench.localdomain
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:$sink_port
smtp_tls_security_level = none
smtpd_tls_security_level = none
biff = no
maillog_file = $pf/maillog
maillog_file_prefixes = $pf
EOF
cat > "$pf/etc/master.cf" <<EOF
127.0.0.1:$pf_port inet n - n - - smtpd
pickup    unix  n - n 60   1 pickup
cleanup   unix  n - n -    0 cleanup
qmgr      unix  n - n 300  1 qmgr
rewrite   unix  - - n -    - trivial-rewrite
bounce    unix  - - n -    0 bounce
defer     unix  - - n -    0 bounce
trace     unix  - - n -    0 bounce
verify    unix  - - n -    1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -    - proxymap
proxywrite unix - - n -    1 proxymap
smtp      unix  - - n -    - smtp
relay     unix  - - n -    - smtp
showq     unix  n - n -    - showq
error     unix  - - n -    - error
retry     unix  - - n -    - error
discard   unix  - - n -    - discard
local     unix  - n n -    - local
virtual   unix  - n n -    - virtual
lmtp      unix  - - n -    - lmtp
anvil     unix  - - n -    1 anvil
scache    unix  - - n -    1 scache
postlog   unix-dgram n - n - 1 postlogd
EOF
postfix -c "$pf/etc" start >/dev/null 2>&1 || { cat "$pf/maillog" >&2 2>/dev/null; echo "postfix did not start" >&2; exit 1; }
wait_port "$pf_port"

# --- Rounds ------------------------------------------------------------------------------------
per_domain=$((messages / domains))
run() { # port -> "seconds-to-last-arrival seconds-of-submission"
  local before t0 t1 t2 src=()
  before=$(sink_count)
  t0=$(now)
  for d in $(seq "$domains"); do
    smtp-source -s 1 -l 1024 -m "$per_domain" -f bench@example.net -t "bench@d$d.example" 127.0.0.1:"$1" &
    src+=("$!")
  done
  for p in "${src[@]}"; do wait "$p" || { echo "smtp-source failed" >&2; exit 1; }; done
  t1=$(now)
  for _ in $(seq 6000); do
    [ "$(sink_count)" -ge $((before + messages)) ] && break
    sleep 0.05
  done
  t2=$(now)
  [ "$(sink_count)" -ge $((before + messages)) ] || { tail -5 "$pf/maillog" "$work/mailroom.log" >&2; echo "the sink got $(( $(sink_count) - before )) of $messages" >&2; exit 1; }
  echo "$(echo "$t2 - $t0" | bc -l) $(echo "$t1 - $t0" | bc -l)"
}

pf_rates=(); mr_rates=()
for round in $(seq "$rounds"); do
  run "$pf_port" > "$work/round"; read -r pf_s pf_sub < "$work/round"
  run "$mr_port" > "$work/round"; read -r mr_s mr_sub < "$work/round"
  pf_rates+=("$(echo "$messages / $pf_s" | bc -l)")
  mr_rates+=("$(echo "$messages / $mr_s" | bc -l)")
  printf '  round %d: Postfix %6.0f mails/s (%.1f s, accepted in %.1f s), Mailroom %6.0f mails/s (%.1f s, accepted in %.1f s)\n' \
    "$round" "${pf_rates[-1]}" "$pf_s" "$pf_sub" "${mr_rates[-1]}" "$mr_s" "$mr_sub"
done
pf_rate=$(median "${pf_rates[@]}")
mr_rate=$(median "${mr_rates[@]}")
printf 'Remote delivery: %d mails x 1 KiB to %d domains, SMTP in, relayed to smtp-sink, median of %d rounds\n' \
  "$messages" "$domains" "$rounds"
printf '  Postfix %s (relayhost):                %8.0f mails/s\n' "$version" "$pf_rate"
printf '  Mailroom (RemoteDelivery, %3d threads): %8.0f mails/s\n' "$threads" "$mr_rate"
printf '  ratio Mailroom / Postfix:               %8.2f x   (target >= 1 x)\n' "$(echo "$mr_rate / $pf_rate" | bc -l)"
if grep -q . "$work/mailroom.log"; then
  echo "  Mailroom's warnings: $(grep -c . "$work/mailroom.log") lines, first: $(head -1 "$work/mailroom.log")"
fi
