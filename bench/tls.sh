#!/usr/bin/env bash
# TLS benchmark: Mailroom against Postfix (SMTP submission) and Dovecot (POP3S), in one run,
# with one load generator (bench/tls-load, a small Rust program on rustls) for all of them, and
# one RSA-2048 certificate served by all three.
#
#   bench/tls.sh [MESSAGES] [SESSIONS] [HANDSHAKES] [ROUNDS]
#
# 1. Submission: SESSIONS (default 10) sessions at once, each EHLO, STARTTLS, EHLO, AUTH PLAIN,
#    then its share of MESSAGES (default 5000) messages of 1 KiB, one command at a time, QUIT.
#    Mailroom's submission listener (the embedded default's, STARTTLS + AUTH required) against
#    Postfix 3.x's smtpd (a private instance on loopback: STARTTLS, SASL through Dovecot's auth
#    socket, virtual(8) delivery to a Maildir). Both answer 250 only once the mail is fsync'd
#    in their queue; both then deliver to a Maildir. Rounds alternate; medians and the ratio
#    (target: Mailroom >= 1x Postfix).
# 2. POP3S handshakes: HANDSHAKES (default 2000) connections, 8 at a time, to an implicit-TLS
#    POP3 port: full handshake (no resumption), banner, QUIT. Mailroom against Dovecot 2.3 in
#    its high-performance mode (login processes reused: service_count = 0, one per core).
# Needs: postfix, dovecot-pop3d (installed if missing), python3, root. Everything binds
# 127.0.0.1; the system's Postfix and Dovecot are neither used nor touched.
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-5000}
sessions=${2:-10}
handshakes=${3:-2000}
rounds=${4:-3}

export PATH=$PATH:/usr/sbin
if ! command -v postfix >/dev/null || ! command -v dovecot >/dev/null; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix dovecot-pop3d >/dev/null
fi
cargo build --release -q -p mailroom -p tls-load
bin=$PWD/target/release/mailroom
load=$PWD/target/release/tls-load

# A new top-level directory, as in smtp-ingest.sh (ext4's Orlov allocator; see the README).
work=$(mktemp -d /mailroom-bench.XXXXXX)
chmod 755 "$work"
pf=$work/postfix
dc=$work/dovecot
pids=()
cleanup() {
  [ -f "$pf/etc/main.cf" ] && postfix -c "$pf/etc" stop >/dev/null 2>&1 || true
  [ -f "$dc/run/master.pid" ] && kill "$(cat "$dc/run/master.pid")" 2>/dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
rate_of() { sed -n 's/.*rate=\([0-9.]*\).*/\1/p'; }

# --- One certificate for everyone ----------------------------------------------------------------
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -addext "basicConstraints=critical,CA:FALSE" \
  -keyout "$work/tls.key" -out "$work/tls.crt" 2>/dev/null
chmod 644 "$work/tls.crt"; chmod 640 "$work/tls.key"; chgrp dovecot "$work/tls.key" 2>/dev/null || chmod 644 "$work/tls.key"

# --- Dovecot: POP3S, and the SASL socket Postfix authenticates through ----------------------------
dc_pop3s=$(free_port)
mkdir -p "$dc/run" "$dc/mail/bench/new" "$dc/mail/bench/cur" "$dc/mail/bench/tmp"
echo "bench:{PLAIN}bench" > "$dc/passwd"
chmod a+x "$dc"; chmod a+r "$dc/passwd"; chown -R nobody:nogroup "$dc/mail"
cat > "$dc/dovecot.conf" <<CONF
protocols = pop3
listen = 127.0.0.1
base_dir = $dc/run
log_path = $dc/dovecot.log
ssl = required
ssl_cert = <$work/tls.crt
ssl_key = <$work/tls.key
ssl_min_protocol = TLSv1.2
auth_mechanisms = plain login
mail_location = maildir:$dc/mail/%u
passdb {
  driver = passwd-file
  args = scheme=PLAIN $dc/passwd
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$dc/mail/%u
}
service pop3-login {
  chroot =
  service_count = 0
  process_min_avail = $(nproc)
  inet_listener pop3 {
    port = 0
  }
  inet_listener pop3s {
    address = 127.0.0.1
    port = $dc_pop3s
    ssl = yes
  }
}
service auth {
  unix_listener $pf/auth {
    mode = 0666
  }
}
service anvil {
  chroot =
}
service imap-login {
  chroot =
}
CONF
mkdir -p "$pf/etc" "$pf/queue" "$pf/data" "$pf/vmail"
dovecot -c "$dc/dovecot.conf" </dev/null >/dev/null 2>&1
wait_port "$dc_pop3s"

# --- Postfix: STARTTLS, SASL through Dovecot, virtual(8) delivery to a Maildir ----------------------
pf_port=$(free_port)
chown postfix "$pf/data"; chown nobody:nogroup "$pf/vmail"
version=$(postconf -h -d mail_version)
cat > "$pf/etc/main.cf" <<CONF
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
alias_maps =
alias_database =
mynetworks =
virtual_mailbox_domains = localhost
virtual_mailbox_base = $pf/vmail
virtual_mailbox_maps = inline:{ bench@localhost=bench/ }
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
smtpd_tls_security_level = may
smtpd_tls_cert_file = $work/tls.crt
smtpd_tls_key_file = $work/tls.key
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = $pf/auth
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
smtp_tls_security_level = none
biff = no
maillog_file = $pf/maillog
maillog_file_prefixes = $pf
CONF
cat > "$pf/etc/master.cf" <<CONF
127.0.0.1:$pf_port inet n - n - - smtpd
pickup    unix  n - n 60   1 pickup
cleanup   unix  n - n -    0 cleanup
qmgr      unix  n - n 300  1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
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
CONF
postfix -c "$pf/etc" start >/dev/null 2>&1 || { cat "$pf/maillog" >&2 2>/dev/null; echo "postfix did not start" >&2; exit 1; }
wait_port "$pf_port"

# --- Mailroom: the embedded default, its submission listener and a POP3S listener ----------------
mr_sub=$(free_port); mr_smtp=$(free_port); mr_pop3=$(free_port); mr_pop3s=$(free_port)
grep -q '<port>5587</port>' crates/config/default-config.xml || { echo "no submission listener in the default config" >&2; exit 1; }
sed -e "s|<port>5587</port>|<port>$mr_sub</port>|" -e "s|<port>2525</port>|<port>$mr_smtp</port>|" \
    -e "s|<port>1110</port>|<port>$mr_pop3</port>|" \
    -e "s|</config>|<tls><certificate>$work/tls.crt</certificate><privateKey>$work/tls.key</privateKey></tls>\n\
<pop3server enabled=\"true\"><port>$mr_pop3s</port><bind>127.0.0.1</bind><tls socketTLS=\"true\"/></pop3server>\n</config>|" \
  crates/config/default-config.xml > "$work/config.xml"
# The load comes from one address: no per-client limit.
sed -i 's|<max-connections-per-ip>[0-9]*<|<max-connections-per-ip>0<|' "$work/config.xml"
"$bin" user add bench --password bench --config "$work/config.xml" >/dev/null
RUST_LOG=warn "$bin" --config "$work/config.xml" 2>"$work/mailroom.log" &
pids+=("$!")
wait_port "$mr_sub"; wait_port "$mr_pop3s"

# --- Submission rounds ----------------------------------------------------------------------------
pf_rates=(); mr_rates=()
for round in $(seq "$rounds"); do
  pf_rates+=("$("$load" submit 127.0.0.1:"$pf_port" "$work/tls.crt" bench bench "$messages" "$sessions" | rate_of)")
  mr_rates+=("$("$load" submit 127.0.0.1:"$mr_sub" "$work/tls.crt" bench bench "$messages" "$sessions" | rate_of)")
  printf '  round %d: Postfix %6.0f msg/s, Mailroom %6.0f msg/s\n' "$round" "${pf_rates[-1]}" "${mr_rates[-1]}"
done
# Both must have delivered every message to their Maildir (a fast server that loses mail is no
# fast server).
total=$((rounds * messages))
count() { find "$1" -type f 2>/dev/null | wc -l; }
for _ in $(seq 1200); do
  [ "$(count "$pf/vmail/bench/new")" -ge "$total" ] && [ "$(count "$work/var/mail/inboxes/bench/new")" -ge "$total" ] && break
  sleep 0.1
done
pf_rate=$(median "${pf_rates[@]}")
mr_rate=$(median "${mr_rates[@]}")
printf 'Submission over STARTTLS + AUTH PLAIN: %d messages x 1 KiB over %d sessions, median of %d rounds\n' \
  "$messages" "$sessions" "$rounds"
printf '  Postfix %s smtpd:          %8.0f msg/s\n' "$version" "$pf_rate"
printf '  Mailroom (submission):       %8.0f msg/s\n' "$mr_rate"
printf '  ratio Mailroom / Postfix:    %8.2f x   (target >= 1 x)\n' "$(echo "$mr_rate / $pf_rate" | bc -l)"
printf '  delivered to Maildir:        Postfix %d, Mailroom %d of %d\n' \
  "$(count "$pf/vmail/bench/new")" "$(count "$work/var/mail/inboxes/bench/new")" "$total"

# --- POP3S handshakes -----------------------------------------------------------------------------
dc_rates=(); mr_rates=()
for round in $(seq "$rounds"); do
  dc_rates+=("$("$load" pop3s 127.0.0.1:"$dc_pop3s" "$work/tls.crt" "$handshakes" 8 | rate_of)")
  mr_rates+=("$("$load" pop3s 127.0.0.1:"$mr_pop3s" "$work/tls.crt" "$handshakes" 8 | rate_of)")
  printf '  round %d: Dovecot %6.0f handshakes/s, Mailroom %6.0f handshakes/s\n' "$round" "${dc_rates[-1]}" "${mr_rates[-1]}"
done
dc_rate=$(median "${dc_rates[@]}")
mr_rate=$(median "${mr_rates[@]}")
printf 'POP3S: %d connections (full TLS handshake, banner, QUIT), 8 at a time, median of %d rounds\n' "$handshakes" "$rounds"
printf '  Dovecot %s:          %8.0f handshakes/s\n' "$(dovecot --version | cut -d' ' -f1)" "$dc_rate"
printf '  Mailroom:                    %8.0f handshakes/s\n' "$mr_rate"
printf '  ratio Mailroom / Dovecot:    %8.2f x\n' "$(echo "$mr_rate / $dc_rate" | bc -l)"
if grep -q . "$work/mailroom.log"; then
  echo "  Mailroom's warnings: $(grep -c . "$work/mailroom.log") lines, first: $(head -1 "$work/mailroom.log")"
fi
