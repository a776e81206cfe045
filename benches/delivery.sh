#!/usr/bin/env bash
# Benchmark: a broadcast to N subscribers (default 100,000) through SMTP into Postfix's smtp-sink,
# against smtp-source sending as many messages of the same size into the same sink.
#
#   benches/delivery.sh [SUBSCRIBERS]
#
# For each of DKIM off and DKIM on (RSA-2048): a fresh SQLite database with N subscribers (email
# consent, one list), `ownlist serve` with the sink as its relay, and a broadcast of a personalised
# tera template of about 4 KB with open and click tracking on (the default). The time runs from
# the broadcast's POST until every message is recorded as sent; peak RSS is the serving process's
# VmHWM. Then smtp-source sends N messages of the size of ownlist's message (one sent to a file
# first, through the same template, without DKIM) over 16 parallel sessions
# (ownlist's concurrency), each keeping its connection for the next message (`-d`), as ownlist's
# pooled connections do. Prints both rates and their ratio.
# Needs postfix (smtp-sink, smtp-source), sqlite3, openssl and curl. BENCH_SKIP_DKIM=1 skips the
# DKIM-on run (for quick comparisons while working on the fast path); BENCH_POLL=S polls the
# broadcast's progress every S seconds (0.2 by default; each poll counts the broadcast's messages).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
. benches/lib.sh
subscribers="${1:-100000}"
work="${BENCH_DIR:-target/bench-delivery}"
token="bench-admin-token-0123456789abcdef"
rm -rf "$work" && mkdir -p "$work"
prepare smtp-sink smtp-source sqlite3 openssl curl
trap 'kill $sink 2>/dev/null || true; [ -n "${server:-}" ] && kill $server 2>/dev/null || true' EXIT

echo "generating $subscribers subscribers…" >&2
write_subscribers "$subscribers" "$work/subscribers.csv"
mkdir -p "$work/workflows"
write_news_template "$work/templates"
ls -l "$work/templates/emails/news.html" >&2
openssl genrsa -traditional -out "$work/dkim.pem" 2048 2>/dev/null

# One run through the sink, with the settings given: prints "seconds messages rss_kb".
run() {
  local name=$1
  shift
  serve_fresh "$work/$name" "$work/subscribers.csv" OWNLIST_SMTP_URL="smtp://127.0.0.1:$port" "$@"
  local seconds sent rss
  read -r seconds sent _ < <(broadcast_and_wait "$address" "$token")
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
  stop_server
  echo "$seconds $sent $rss"
}

# The size of one message as ownlist sends it: the same broadcast to one subscriber through the
# `file` transport (the .eml is the message as it goes over the wire, headers, MIME structure,
# encoded HTML and the plain part derived from it).
sample_size() {
  local dir="$work/sample"
  mkdir -p "$dir"
  head -2 "$work/subscribers.csv" > "$dir/one.csv"
  serve_fresh "$dir" "$dir/one.csv"
  broadcast_and_wait "$address" "$token" >/dev/null
  stop_server
  stat -c %s "$dir"/data/mail/*.eml
}
sample_size > "$work/size"
size=$(cat "$work/size")

echo "ownlist, DKIM off…" >&2
read -r off_s off_n off_rss < <(run dkim-off)
if [ "${BENCH_SKIP_DKIM:-0}" = 1 ]; then
  read -r on_s on_n on_rss <<< "$off_s $off_n 0"
else
  echo "ownlist, DKIM on…" >&2
  read -r on_s on_n on_rss < <(run dkim-on OWNLIST_DKIM_DOMAIN=example.com OWNLIST_DKIM_SELECTOR=news OWNLIST_DKIM_KEY_FILE="$work/dkim.pem")
fi

echo "smtp-source: $subscribers messages of $size bytes, 16 sessions, each connection kept (-d)…" >&2
start=$(date +%s.%N)
smtp-source -s 16 -m "$subscribers" -l "$size" -d -f news@example.com -t reader@example.com "127.0.0.1:$port"
end=$(date +%s.%N)
base_s=$(echo "$end - $start" | bc -l)

rate() { echo "$1 / $2" | bc -l; }
base_rate=$(rate "$subscribers" "$base_s")
off_rate=$(rate "$off_n" "$off_s")
on_rate=$(rate "$on_n" "$on_s")
printf 'subscribers: %d, message size: %d bytes\n' "$subscribers" "$size"
printf 'smtp-source -d: %.1f s, %.0f msg/s\n' "$base_s" "$base_rate"
printf 'ownlist, DKIM off: %d sent in %.1f s, %.0f msg/s, %.0f%% of smtp-source, peak RSS %.0f MB\n' \
  "$off_n" "$off_s" "$off_rate" "$(echo "100 * $off_rate / $base_rate" | bc -l)" "$(echo "$off_rss / 1024" | bc -l)"
if [ "${BENCH_SKIP_DKIM:-0}" = 1 ]; then
  echo "ownlist, DKIM on:  skipped (BENCH_SKIP_DKIM=1)"
else
  printf 'ownlist, DKIM on:  %d sent in %.1f s, %.0f msg/s, %.0f%% of smtp-source, peak RSS %.0f MB\n' \
    "$on_n" "$on_s" "$on_rate" "$(echo "100 * $on_rate / $base_rate" | bc -l)" "$(echo "$on_rss / 1024" | bc -l)"
fi
[ "$off_n" -eq "$subscribers" ] && [ "$on_n" -eq "$subscribers" ] || { echo "not every message was sent" >&2; exit 1; }
