#!/usr/bin/env bash
# Benchmark: import N generated subscribers (default 1,000,000) from CSV through `ownlist import`
# into a fresh SQLite database, and report rows/s and peak RSS.
#
#   benches/import.sh [ROWS]
#
# Every row has an email, names, a tag and two attribute columns; one row in five also has a
# phone number. Everyone joins one list. Needs GNU time (/usr/bin/time, Debian package `time`).
set -euo pipefail
cd "$(dirname "$0")/.."
rows="${1:-1000000}"
work="${BENCH_DIR:-target/bench-import}"
rm -rf "$work" && mkdir -p "$work"

command -v /usr/bin/time >/dev/null || { echo "needs /usr/bin/time: apt-get install -y time" >&2; exit 2; }
cargo build --release --quiet

echo "generating $rows rows…" >&2
awk -v n="$rows" 'BEGIN {
  print "email,first_name,last_name,phone,tags,city,plan";
  split("Rome,Paris,Lagos,Lima,Osaka,Oslo,Quito,Accra", cities, ",");
  for (i = 1; i <= n; i++) {
    phone = (i % 5 == 0) ? sprintf("+14152%06d", i / 5) : "";
    printf "user%d@example.com,First%d,Last%d,%s,t%d,%s,%s\n", i, i, i, phone, i % 10, cities[i % 8 + 1], (i % 3 ? "free" : "pro");
  }
}' > "$work/subscribers.csv"
ls -lh "$work/subscribers.csv" >&2

export OWNLIST_DATA_DIR="$work/data" OWNLIST_LOG=warn
./target/release/ownlist migrate >/dev/null
sqlite3 "$work/data/ownlist.db" "INSERT INTO lists (id, slug, name, double_opt_in, created_at, updated_at) VALUES (randomblob(16), 'bench', 'Bench', 0, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z');"

start=$(date +%s.%N)
/usr/bin/time -v -o "$work/time.txt" ./target/release/ownlist import "$work/subscribers.csv" --list bench 2> "$work/import.log" || true
end=$(date +%s.%N)
cat "$work/import.log" | tail -3 >&2

count=$(sqlite3 "$work/data/ownlist.db" "SELECT COUNT(*) FROM subscribers")
rss_kb=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$work/time.txt")
seconds=$(echo "$end - $start" | bc -l)
rate=$(echo "$count / $seconds" | bc -l)
printf 'rows: %d imported of %d\nseconds: %.1f\nrate: %.0f rows/s\npeak RSS: %.1f MB\n' "$count" "$rows" "$seconds" "$rate" "$(echo "$rss_kb / 1024" | bc -l)"
[ "$count" -eq "$rows" ] || { echo "not every row was imported" >&2; exit 1; }
