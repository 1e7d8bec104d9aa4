#!/usr/bin/env bash
# Draws the plan and a final graph of each canonical example into book/src/images/ (needs
# Graphviz `dot`). Run from the workspace root after `cargo build -p salt-examples --examples`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=book/src/images
bin=target/debug/examples
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"
draw() { # example, run input or "", name
  local ex=$1 input=$2
  # A plan that breaks a promise is refused: no picture.
  SALT_DB="$tmp/$ex.db" "$bin/$ex" graph "$ex" --plan --format svg > "$out/$ex-plan.svg" || rm -f "$out/$ex-plan.svg"
  if [ -n "$input" ]; then
    SALT_DB="$tmp/$ex.db" "$bin/$ex" run --input "$input" >/dev/null 2>&1 || true
  else
    SALT_DB="$tmp/$ex.db" "$bin/$ex" run >/dev/null 2>&1 || true
  fi
  SALT_DB="$tmp/$ex.db" "$bin/$ex" graph 1 --format svg > "$out/$ex-final.svg"
}
draw static_pipeline ""
draw random_branch '{"seed": 1}'
draw random_map '{"seed": 3}'
draw broken_promise ""
# approval: plan, then a run that parked (drawn while it waits), then the signal.
SALT_DB="$tmp/approval.db" "$bin/approval" graph approval --plan --format svg > "$out/approval-plan.svg"
SALT_DB="$tmp/approval.db" "$bin/approval" run >/dev/null 2>&1 &
pid=$!
until SALT_DB="$tmp/approval.db" "$bin/approval" show 1 2>/dev/null | grep -q "waits for signal"; do sleep 0.1; done
SALT_DB="$tmp/approval.db" "$bin/approval" graph 1 --format svg > "$out/approval-waiting.svg"
SALT_DB="$tmp/approval.db" "$bin/approval" signal 1 decision '{"approved": true, "by": "ada"}' >/dev/null
wait "$pid"
SALT_DB="$tmp/approval.db" "$bin/approval" graph 1 --format svg > "$out/approval-final.svg"
ls -1 "$out"
