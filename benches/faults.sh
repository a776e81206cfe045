#!/usr/bin/env bash
# Fault benchmarks: what a failing relay costs a broadcast to N subscribers (default 50,000).
#
#   benches/faults.sh [SUBSCRIBERS]
#
# 1. The baseline: the broadcast through one healthy relay (Postfix's smtp-sink).
# 2. A tarpit primary: the preferred relay accepts connections and never says a word, the
#    healthy one is second. Prints the throughput against the baseline's, from the time 99% of
#    the messages were sent (the last few are those that tried the silent relay, each waiting out
#    its greeting limit before going on), and when the last one was.
# 3. An outage of the only relay: the broadcast starts while nothing listens on the relay's
#    port; 62 s later a healthy relay starts there. Prints how long after its return the last
#    message was sent.
# Each run is a fresh SQLite database with N subscribers and `ownlist serve` at its defaults
# (20 s cool-down, 10 s greeting limit). Needs postfix (smtp-sink), sqlite3, curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
. benches/lib.sh
subscribers="${1:-50000}"
work="${BENCH_DIR:-target/bench-faults}"
token="bench-admin-token-0123456789abcdef"
rm -rf "$work" && mkdir -p "$work"
prepare smtp-sink sqlite3 curl python3
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
tarpit_port=$(free_port)
outage_port=$(free_port)
# A relay that accepts every connection and never answers.
python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1024)
held = []
while True:
    held.append(s.accept()[0])' "$tarpit_port" &
tarpit=$!
trap 'kill $sink $tarpit ${late_sink:-} 2>/dev/null || true; [ -n "${server:-}" ] && kill $server 2>/dev/null || true' EXIT

write_subscribers "$subscribers" "$work/subscribers.csv"
mkdir -p "$work/workflows"
write_news_template "$work/templates"

# One broadcast: prints "SECONDS SENT SECONDS_TO_99%".
run() {
  local name=$1 seconds sent p99
  shift
  serve_fresh "$work/$name" "$work/subscribers.csv" "$@"
  read -r seconds sent _ < <(broadcast_and_wait "$address" "$token")
  p99=$(sqlite3 "$work/$name/data/ownlist.db" "SELECT (julianday(sent_at) - julianday((SELECT created_at FROM broadcasts))) * 86400
    FROM outbox ORDER BY sent_at LIMIT 1 OFFSET $((subscribers * 99 / 100 - 1))")
  stop_server
  echo "$seconds $sent $p99"
}

echo "baseline: one healthy relay…" >&2
read -r base_s base_n base_p99 < <(run healthy OWNLIST_SMTP_URL="smtp://127.0.0.1:$port")
echo "a tarpit primary beside the healthy relay…" >&2
read -r tarpit_s tarpit_n tarpit_p99 < <(run tarpit OWNLIST_SMTP_URL="smtp://127.0.0.1:$tarpit_port" \
  OWNLIST_SMTP_RELAYS="smtp://127.0.0.1:$port")

echo "an outage of the only relay: 62 s, then it is back…" >&2
serve_fresh "$work/outage" "$work/subscribers.csv" OWNLIST_SMTP_URL="smtp://127.0.0.1:$outage_port"
started=$(date +%s.%N)
broadcast_and_wait "$address" "$token" > "$work/outage.out" &
waiting=$!
sleep 62
user_flag=()
[ "$(id -u)" -eq 0 ] && user_flag=(-u nobody)
smtp-sink "${user_flag[@]}" "127.0.0.1:$outage_port" 1024 &
late_sink=$!
back=$(date +%s.%N)
wait "$waiting"
stop_server
read -r outage_s outage_n _ < "$work/outage.out"
after=$(echo "$started + $outage_s - $back" | bc -l)

printf 'subscribers: %d\n' "$subscribers"
printf 'healthy relay: %d sent in %.1f s (99%% in %.1f s)\n' "$base_n" "$base_s" "$base_p99"
printf 'tarpit primary + healthy secondary: 99%% sent in %.1f s, %.0f%% of the healthy throughput; all %d in %.1f s\n' \
  "$tarpit_p99" "$(echo "100 * $base_p99 / $tarpit_p99" | bc -l)" "$tarpit_n" "$tarpit_s"
printf 'outage of the only relay (62 s): %d sent, the last %.1f s after the relay was back\n' "$outage_n" "$after"
[ "$base_n" -eq "$subscribers" ] && [ "$tarpit_n" -eq "$subscribers" ] && [ "$outage_n" -eq "$subscribers" ] \
  || { echo "not every message was sent" >&2; exit 1; }
