#!/usr/bin/env bash
# SMTP ingest with the spool, the inboxes and the users in a database, beside the file backend
# and Postfix's smtp-sink, in one run:
#
#   bench/smtp-ingest-db.sh [MESSAGES] [SESSIONS] [ROUNDS]
#
# smtp-source sends MESSAGES (default 5000) messages of 1 KiB over SESSIONS (default 10)
# sessions to each of: smtp-sink (no storage), Mailroom on files (the default config), Mailroom
# on SQLite (sqlite://var/mail.db), on DBFile over SQLite (rows in the database, bodies in
# files), one Mailroom node on PostgreSQL, and two nodes on one
# PostgreSQL (each gets half the messages and half the sessions, at the same time), in ROUNDS
# (default 3) alternating rounds. Prints each round and the medians, and checks that every
# message reached the bench user's inbox. PostgreSQL is a private cluster (initdb + pg_ctl as
# the postgres user on a free loopback port, default settings: synchronous commit), removed at
# the end. Needs: root, postgresql, postfix (smtp-source, smtp-sink), python3.
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-5000}
sessions=${2:-10}
rounds=${3:-3}

if ! command -v smtp-source >/dev/null && [ ! -x /usr/sbin/smtp-source ]; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >/dev/null
fi
if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >/dev/null
fi
export PATH=$PATH:/usr/sbin
cargo build --release -q -p mailroom
bin=$PWD/target/release/mailroom
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

# A top-level directory: see smtp-ingest.sh (ext4's Orlov allocator).
work=$(mktemp -d /mailroom-bench-db.XXXXXX)
chown postgres "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  su postgres -s /bin/sh -c "$pgbin/pg_ctl -D $work/pg -m immediate stop" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 400); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; tail -n 5 "$work"/*/mailroom.log >&2; exit 1; }
now() { date +%s.%N; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

pgport=$(free_port)
su postgres -s /bin/sh -c "$pgbin/initdb -D $work/pg -A trust -U postgres >/dev/null \
  && $pgbin/pg_ctl -D $work/pg -o '-c listen_addresses=127.0.0.1 -p $pgport -k $work' \
     -l $work/pg.log -w start >/dev/null"
psql() { "$pgbin/psql" -h 127.0.0.1 -p "$pgport" -U postgres -Atq "$@"; }
psql -d postgres -c 'CREATE DATABASE one' -c 'CREATE DATABASE two'

# A node's config: the default one on its own ports, its repositories on BACKEND (file, or a
# <dburl>).
make_config() { # home backend [scheme: db or dbfile] -> prints the SMTP port
  local home=$1 backend=$2 scheme=${3:-db} port
  mkdir -p "$home"
  port=$(free_port)
  python3 - "$home/config.xml" "$backend" "$scheme" "$port" "$(free_port)" "$(free_port)" "$(free_port)" "$(free_port)" "$(free_port)" <<'PY'
import re, sys
out, backend, scheme, smtp, submission, pop3, nntp, rm, metrics = sys.argv[1:]
xml = open("crates/config/default-config.xml").read()
for old, new in (("2525", smtp), ("5587", submission), ("1110", pop3), ("1119", nntp), ("4555", rm),
                 ("9465", metrics)):
    xml = xml.replace(f"<port>{old}</port>", f"<port>{new}</port>")
xml = re.sub(r"<max-connections-per-ip>\d+<", "<max-connections-per-ip>0<", xml)  # one load address
if backend != "file":
    xml = xml.replace("<dburl>sqlite://var/mail.db</dburl>", f"<dburl>{backend}</dburl>")
    for old, new in (("file://var/mail/inboxes/", f"{scheme}://maildb/inbox/"),
                     ("file://var/mail/spool/", f"{scheme}://maildb/spool/spool"),
                     ("file://var/mail/error/", f"{scheme}://maildb/mail/error/"),
                     ("file://var/mail/address-error/", f"{scheme}://maildb/mail/address-error/")):
        assert old in xml, old
        xml = xml.replace(old, new)
    old = ('<repository name="LocalUsers" class="org.apache.james.userrepository.UsersFileRepository">\n'
           '         <destination URL="file://var/users/"/>')
    assert old in xml
    xml = xml.replace(old, '<repository name="LocalUsers" '
                      'class="org.apache.james.userrepository.JamesUsersJdbcRepository">\n'
                      '         <destination URL="db://maildb/users"/>')
open(out, "w").write(xml)
PY
  echo "$port"
}

start_node() { # home
  RUST_LOG=warn "$bin" --config "$1/config.xml" --home "$1" 2>"$1/mailroom.log" &
  pids+=("$!")
}

declare -A port
port[file]=$(make_config "$work/file" file)
port[sqlite]=$(make_config "$work/sqlite" sqlite://var/mail.db)
port[dbfile]=$(make_config "$work/dbfile" sqlite://var/mail.db dbfile)
port[pg1]=$(make_config "$work/pg1" "postgres://postgres@127.0.0.1:$pgport/one")
port[pg2a]=$(make_config "$work/pg2a" "postgres://postgres@127.0.0.1:$pgport/two")
port[pg2b]=$(make_config "$work/pg2b" "postgres://postgres@127.0.0.1:$pgport/two")
for node in file sqlite dbfile pg1 pg2a; do
  "$bin" user add bench --password bench --config "$work/$node/config.xml" --home "$work/$node" >/dev/null
done
for node in file sqlite dbfile pg1 pg2a pg2b; do start_node "$work/$node"; done
for node in file sqlite dbfile pg1 pg2a pg2b; do wait_port "${port[$node]}"; done
sink_port=$(free_port)
smtp-sink -u nobody -c 127.0.0.1:"$sink_port" 256 >/dev/null 2>&1 &
pids+=("$!")
wait_port "$sink_port"

source_to() { # port messages sessions
  smtp-source -s "$3" -l 1024 -m "$2" -f bench@example.net -t bench@localhost 127.0.0.1:"$1"
}
timed() { local t0; t0=$(now); "$@"; echo "$(now) - $t0" | bc -l; }
two_nodes() {
  source_to "${port[pg2a]}" $((messages / 2)) $(((sessions + 1) / 2)) &
  local a=$!
  source_to "${port[pg2b]}" $((messages - messages / 2)) $((sessions / 2 > 0 ? sessions / 2 : 1))
  wait "$a"
}
delivered() { # kind
  case $1 in
    file) find "$work/file/var/mail/inboxes/bench/new" -type f 2>/dev/null | wc -l ;;
    sqlite|dbfile) python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM inbox WHERE repository_name = ?", ("bench",)).fetchone()[0])' "$work/$1/var/mail.db" ;;
    pg1) psql -d one -c "SELECT count(*) FROM inbox WHERE repository_name = 'bench'" ;;
    pg2) psql -d two -c "SELECT count(*) FROM inbox WHERE repository_name = 'bench'" ;;
  esac
}
drain() { # kind expected
  for _ in $(seq 1200); do
    [ "$(delivered "$1")" -ge "$2" ] && return
    sleep 0.1
  done
  echo "  $1: only $(delivered "$1") of $2 delivered" >&2
}

# CPU seconds (user + system) a process has used, its reaped children's included: for
# PostgreSQL, the postmaster and every backend alive.
cpu_of() { # pid...
  local total=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    total=$((total + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat")))
  done
  echo "$total / $(getconf CLK_TCK)" | bc -l
}
pg_pids() { local pm; pm=$(head -1 "$work/pg/postmaster.pid"); echo "$pm" $(ps -o pid= --ppid "$pm"); }
declare -A node_pid
i=0
for node in file sqlite dbfile pg1 pg2a pg2b; do node_pid[$node]=${pids[$i]}; i=$((i + 1)); done
node_pids() { # kind
  case $1 in
    pg2) echo "${node_pid[pg2a]} ${node_pid[pg2b]}" ;;
    *) echo "${node_pid[$1]}" ;;
  esac
}
declare -A cpu_node cpu_pg

declare -A rates
kinds=(sink file sqlite dbfile pg1 pg2)
for round in $(seq "$rounds"); do
  line="  round $round:"
  for kind in "${kinds[@]}"; do
    if [ "$kind" != sink ]; then
      # shellcheck disable=SC2046
      n0=$(cpu_of $(node_pids "$kind")); p0=$(cpu_of $(pg_pids))
    fi
    case $kind in
      sink) s=$(timed source_to "$sink_port" "$messages" "$sessions") ;;
      pg2) s=$(timed two_nodes) ;;
      *) s=$(timed source_to "${port[$kind]}" "$messages" "$sessions") ;;
    esac
    rate=$(echo "$messages / $s" | bc -l)
    rates[$kind]="${rates[$kind]:-} $rate"
    line="$line $kind $(printf '%.0f' "$rate")"
    if [ "$kind" != sink ]; then
      drain "$kind" $((round * messages))
      # shellcheck disable=SC2046
      cpu_node[$kind]="${cpu_node[$kind]:-} $(echo "($(cpu_of $(node_pids "$kind"))) - ($n0)" | bc -l)"
      # shellcheck disable=SC2046
      cpu_pg[$kind]="${cpu_pg[$kind]:-} $(echo "($(cpu_of $(pg_pids))) - ($p0)" | bc -l)"
    fi
  done
  echo "$line msg/s"
done

printf 'SMTP ingest with database repositories: %d messages x 1 KiB over %d sessions, median of %d rounds\n' \
  "$messages" "$sessions" "$rounds"
declare -A med
for kind in "${kinds[@]}"; do
  # shellcheck disable=SC2086
  med[$kind]=$(median ${rates[$kind]})
done
pct() { echo "100 * $1 / $2" | bc -l; }
printf '  smtp-sink (no storage):        %7.0f msg/s\n' "${med[sink]}"
printf '  Mailroom, files:               %7.0f msg/s  (%.0f %% of smtp-sink)\n' "${med[file]}" "$(pct "${med[file]}" "${med[sink]}")"
printf '  Mailroom, SQLite:              %7.0f msg/s  (%.0f %% of files; target >= 50 %%)\n' "${med[sqlite]}" "$(pct "${med[sqlite]}" "${med[file]}")"
printf '  Mailroom, DBFile (SQLite):     %7.0f msg/s  (%.0f %% of files)\n' "${med[dbfile]}" "$(pct "${med[dbfile]}" "${med[file]}")"
printf '  Mailroom, PostgreSQL, 1 node:  %7.0f msg/s  (%.0f %% of files)\n' "${med[pg1]}" "$(pct "${med[pg1]}" "${med[file]}")"
printf '  Mailroom, PostgreSQL, 2 nodes: %7.0f msg/s  (%.2fx one node; target >= 1.5x)\n' "${med[pg2]}" "$(echo "${med[pg2]} / ${med[pg1]}" | bc -l)"
echo "  CPU seconds per 1000 messages, ingest and delivery (median; Mailroom's nodes, PostgreSQL's processes):"
for kind in file sqlite dbfile pg1 pg2; do
  # shellcheck disable=SC2086
  printf '    %-7s mailroom %5.2f  postgres %5.2f\n' "$kind" \
    "$(echo "1000 * $(median ${cpu_node[$kind]}) / $messages" | bc -l)" \
    "$(echo "1000 * $(median ${cpu_pg[$kind]}) / $messages" | bc -l)"
done
missing=0
for kind in file sqlite dbfile pg1 pg2; do
  got=$(delivered "$kind")
  [ "$got" -ge $((rounds * messages)) ] || { echo "  $kind: MISSING MESSAGES ($got of $((rounds * messages)))" >&2; missing=1; }
done
[ "$missing" = 0 ] && echo "  every message delivered to the inbox"
exit "$missing"
