# Shared by the delivery benchmarks (sourced, not run): the subscribers, the template, and a
# broadcast timed until it is done.

# N subscribers with email consent, as CSV.
write_subscribers() {
  awk -v n="$1" 'BEGIN {
    print "email,first_name,last_name,email_state";
    for (i = 1; i <= n; i++) printf "reader%d@example.com,First%d,Last%d,subscribed\n", i, i, i;
  }' > "$2"
}

# About 4 KB of HTML: a greeting with the subscriber's name, seven paragraphs and links, a footer
# with its own unsubscribe link. Content, as email templates are written: it is sent in the email
# layout (templates/emails/_layout.html), which adds the business's name and footer.
write_news_template() {
  mkdir -p "$1/emails"
  {
    echo '<h1 style="font-size:22px">Hello {{ subscriber.first_name }} {{ subscriber.last_name }},</h1>'
    for i in 1 2 3 4 5 6 7; do
      echo "<p style=\"font-size:16px;line-height:1.5\">Paragraph $i of this week's news for {{ subscriber.first_name }}: we moved our shop off the social network, so you hear from us whatever happens to it. Our spring collection is in, with new colours and sizes, and free delivery on every order this week only.</p>"
      echo "<p><a href=\"https://shop.example.com/spring/item-$i?utm_source=newsletter&amp;utm_medium=email\" style=\"color:#1a56db\">See item $i in the shop</a></p>"
    done
    echo '<table role="presentation" width="100%"><tr><td style="padding:16px;background:#f4f4f4">Opening hours: Monday to Saturday, 9 to 19. Questions? Reply to this email and a person will answer. You can also call us at +1 415 555 2671.</td></tr></table>'
    echo '<hr style="border:none;border-top:1px solid #ddd;margin:32px 0 16px">'
    echo '<p style="font-size:12px;color:#666">You get this because you subscribed as {{ subscriber.email }}. <a href="{{ preferences_url }}">Choose what you get</a> or <a href="{{ unsubscribe_url }}">unsubscribe</a> in one click.</p>'
  } > "$1/emails/news.html"
}

# The address `ownlist serve` printed in FILE once it is serving.
served_address() {
  for _ in $(seq 1 100); do grep -q "serving on" "$1" 2>/dev/null && break; sleep 0.1; done
  head -1 "$1" | sed -E 's#.*http://([^/]+)/.*#\1#'
}

# Posts the news broadcast to ADDRESS with TOKEN and waits until it is done; prints
# "SECONDS SENT FAILED WRITTEN_AFTER_SECONDS". The progress is polled with curl and read with
# bash's own pattern matching: the poll must not take CPU from the process being measured (a
# Python interpreter started five times a second took about a tenth of the machine).
broadcast_and_wait() {
  local address=$1 token=$2 start end id body status sent failed
  local api="http://$address/api/v1/broadcasts"
  start=$(date +%s.%N)
  body=$(curl -sf -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d '{"list":"news","subject":"Spring news for {{ subscriber.first_name }}","template":"emails/news.html"}' "$api")
  [[ $body =~ \"id\":\"([0-9a-f-]+)\" ]] || { echo "broadcast refused: $body" >&2; return 1; }
  id=${BASH_REMATCH[1]}
  while true; do
    body=$(curl -sf -H "Authorization: Bearer $token" "$api/$id") || body=""
    [[ $body =~ \"status\":\"done\" ]] && break
    sleep "${BENCH_POLL:-0.2}"
  done
  end=$(date +%s.%N)
  [[ $body =~ \"sent\":([0-9]+) ]] && sent=${BASH_REMATCH[1]}
  [[ $body =~ \"failed\":([0-9]+) ]] && failed=${BASH_REMATCH[1]}
  status=$(python3 -c 'import json,sys,datetime as d
b = json.loads(sys.argv[1])
t = lambda s: d.datetime.fromisoformat(s.replace("Z", "+00:00"))
print("%.1f" % (t(b["queued_at"]) - t(b["created_at"])).total_seconds())' "$body")
  echo "$(echo "$end - $start" | bc -l) $sent $failed $status"
}

# Checks the tools, builds the release binary, and starts Postfix's smtp-sink on a free loopback
# port: sets `port` and `sink` (its pid).
prepare() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install -y postfix sqlite3 openssl curl postgresql-client)" >&2; exit 2; }
  done
  cargo build --release --quiet
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  local user_flag=()
  [ "$(id -u)" -eq 0 ] && user_flag=(-u nobody)
  smtp-sink "${user_flag[@]}" "127.0.0.1:$port" 1024 &
  sink=$!
}

# (Uses `work` and `token` of the script.) A fresh database in DIR with the news list and the subscribers of CSV, and `ownlist serve` on
# it with the settings given (VAR=value …) added: sets `server` (its pid) and `address`.
serve_fresh() {
  local dir=$1 csv=$2
  shift 2
  mkdir -p "$dir"
  env OWNLIST_DATA_DIR="$dir/data" OWNLIST_LOG=warn ./target/release/ownlist migrate >/dev/null
  sqlite3 "$dir/data/ownlist.db" "INSERT INTO lists (id, slug, name, double_opt_in, created_at, updated_at) VALUES (randomblob(16), 'news', 'News', 0, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z');"
  env OWNLIST_DATA_DIR="$dir/data" OWNLIST_LOG=warn ./target/release/ownlist import "$csv" --list news >/dev/null 2>&1
  env OWNLIST_DATA_DIR="$dir/data" OWNLIST_LOG=warn OWNLIST_LISTEN=127.0.0.1:0 OWNLIST_ADMIN_TOKEN="$token" \
    OWNLIST_BASE_URL=https://news.example.com/ OWNLIST_EMAIL_FROM="Shop <news@example.com>" \
    OWNLIST_TEMPLATES_DIR="$work/templates" OWNLIST_WORKFLOWS_DIR="$work/workflows" "$@" \
    ./target/release/ownlist serve > "$dir/serve.out" 2> "$dir/serve.err" &
  server=$!
  address=$(served_address "$dir/serve.out")
}

stop_server() {
  kill "$server"
  wait "$server" 2>/dev/null || true
  server=""
}
