#!/usr/bin/env bash
# Lighthouse's four scores (performance, accessibility, best practices, SEO) of the shipped landing
# page and its thank-you page, at phone and laptop settings, served by a release build with the
# shipped workflows and templates and a business name, address and privacy link set.
#
#   benches/lighthouse.sh
#
# Installs Lighthouse from the npm registry under target/tools on its first run; needs Chromium
# (Debian package `chromium`) and npm.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=target/tools
[ -x "$tools/node_modules/.bin/lighthouse" ] ||
  npm install --prefix "$tools" --no-audit --no-fund --silent "lighthouse@12.8.2" >/dev/null
chrome=$(command -v chromium || command -v chromium-browser) || { echo "needs Chromium: apt-get install -y chromium" >&2; exit 2; }
cargo build --release --quiet

work=$(mktemp -d /tmp/ownlist-lighthouse.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cp -r workflows templates "$work/"
bin="$PWD/target/release/ownlist"
(cd "$work" && OWNLIST_LISTEN="127.0.0.1:$port" OWNLIST_LOG=warn OWNLIST_BUSINESS_NAME="Bottega Rossi" \
  OWNLIST_POSTAL_ADDRESS="Via Roma 1, 20121 Milano" OWNLIST_PRIVACY_URL="https://bottega.example/privacy" \
  exec "$bin" serve >serve.log 2>&1) &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done

for path in /p/guide /p/guide/thanks; do
  for form in mobile desktop; do
    preset=(); [ "$form" = desktop ] && preset=(--preset=desktop)
    CHROME_PATH="$chrome" "$tools/node_modules/.bin/lighthouse" "http://127.0.0.1:$port$path" --quiet \
      --chrome-flags="--headless=new --no-sandbox" --output=json --output-path="$work/report.json" "${preset[@]}" >/dev/null 2>&1
    python3 - "$work/report.json" "$path" "$form" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
scores = {k: round(v["score"] * 100) for k, v in report["categories"].items()}
print(f"{sys.argv[2]:18} {sys.argv[3]:8} " + "  ".join(f"{k} {v}" for k, v in scores.items()))
for k, v in report["categories"].items():
    for ref in v["auditRefs"]:
        audit = report["audits"][ref["id"]]
        if ref["weight"] > 0 and audit["score"] is not None and audit["score"] < 1:
            print(f"    {k}: {ref['id']} ({audit['title']})")
PY
  done
done
