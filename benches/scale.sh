#!/usr/bin/env bash
# Benchmark: the delivery benchmark on PostgreSQL with one process and then with two (`serve`
# plus one `ownlist worker`), and the scaling ratio; each run a fresh database with N subscribers
# (default 100,000) and a broadcast of a personalised ~4 KB template (tracking on, DKIM off) into
# Postfix's smtp-sink, timed from the broadcast's POST until every message is recorded as sent.
# Prints each run's rate and every process's peak RSS.
#
#   benches/scale.sh [SUBSCRIBERS] [PROCESS_COUNTS…]     e.g. benches/scale.sh 1000000 2
#
# Needs postfix (smtp-sink), psql, curl and a PostgreSQL server (BENCH_DATABASE_URL, default
# postgres://postgres@127.0.0.1:5432/postgres, used to create and drop the run's database).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
. benches/lib.sh
subscribers="${1:-100000}"
shift || true
counts=("$@")
[ "${#counts[@]}" -eq 0 ] && counts=(1 2)
admin="${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
work="${BENCH_DIR:-target/bench-scale}"
token="bench-admin-token-0123456789abcdef"
rm -rf "$work" && mkdir -p "$work"
prepare smtp-sink psql curl python3
pids=()
trap 'kill $sink "${pids[@]}" 2>/dev/null || true' EXIT

write_subscribers "$subscribers" "$work/subscribers.csv"
mkdir -p "$work/workflows"
write_news_template "$work/templates"

peak() { awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo "?"; }

for count in "${counts[@]}"; do
  name="ownlist_bench_$(date +%s%N)"
  psql "$admin" -qc "CREATE DATABASE \"$name\"" >/dev/null
  url="${admin%/*}/$name"
  export OWNLIST_DATABASE_URL="$url" OWNLIST_LOG=warn OWNLIST_DATA_DIR="$work/data-$count"
  ./target/release/ownlist migrate >/dev/null
  psql "$url" -qc "INSERT INTO lists (id, slug, name, double_opt_in, created_at, updated_at) VALUES (gen_random_uuid(), 'news', 'News', false, now(), now())"
  ./target/release/ownlist import "$work/subscribers.csv" --list news >/dev/null 2>&1
  common=(env OWNLIST_ADMIN_TOKEN="$token" OWNLIST_BASE_URL=https://news.example.com/
    OWNLIST_EMAIL_FROM="Shop <news@example.com>" OWNLIST_SMTP_URL="smtp://127.0.0.1:$port"
    OWNLIST_TEMPLATES_DIR="$work/templates" OWNLIST_WORKFLOWS_DIR="$work/workflows")
  "${common[@]}" OWNLIST_LISTEN=127.0.0.1:0 ./target/release/ownlist serve > "$work/serve-$count.out" 2> "$work/serve-$count.err" &
  pids=($!)
  for _ in $(seq 2 "$count"); do
    "${common[@]}" ./target/release/ownlist worker > /dev/null 2>> "$work/workers-$count.err" &
    pids+=($!)
  done
  address=$(served_address "$work/serve-$count.out")
  read -r seconds sent _ written < <(broadcast_and_wait "$address" "$token")
  rss=""
  for pid in "${pids[@]}"; do rss="$rss $(peak "$pid") MB"; done
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  pids=()
  psql "$admin" -qc "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" >/dev/null
  printf '%d process(es): %s sent in %.1f s (all written after %s s), %.0f msg/s, peak RSS per process:%s\n' \
    "$count" "$sent" "$seconds" "$written" "$(echo "$sent / $seconds" | bc -l)" "$rss"
done
