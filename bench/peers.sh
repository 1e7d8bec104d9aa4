#!/usr/bin/env bash
# salt and its peers side by side: runs salt's benchmark (release build), then the peer
# benchmarks of ../shared/bench-peers (Prefect 3, Dagster) on the same machine, and prints one
# table of per-node costs with the ratio peer / salt. Peers whose virtualenv cannot be made are
# skipped with a note. Not for CI: the peers take minutes.
#
# usage: bench/peers.sh [PEERS_DIR] [--only W1,W2,...]
set -u
cd "$(dirname "$0")/.."
peers=${1:-../shared/bench-peers}
shift || true
only=${1:-}
[ "$only" = "--only" ] && only=$2 || only=W0,W1,W2,W3

out=$(mktemp -d)
cargo build --release -q -p bench || exit 1
echo "salt: running its workloads ($only) on inline, pool and process..." >&2
./target/release/bench --only "$only" --json > "$out/salt.jsonl" || exit 1

if [ -x "$peers/run_all.sh" ]; then
  echo "peers: running $peers/run_all.sh (minutes)..." >&2
  "$peers/run_all.sh" > "$out/peers.txt" 2>&1 || echo "peers: run_all.sh failed; see $out/peers.txt" >&2
else
  echo "peers: no $peers/run_all.sh; showing salt alone" >&2
  : > "$out/peers.txt"
fi

python3 - "$out/salt.jsonl" "$out/peers.txt" <<'EOF'
import json, re, statistics, sys
salt = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
peers = {}
for line in open(sys.argv[2]):
    m = re.match(r"^(\S+) (W\d) n=\d+ .*per_task_ms=([\d.]+)", line)
    if m:
        peers.setdefault((m.group(1), m.group(2)), []).append(float(m.group(3)) * 1000)
if not peers:
    note = open(sys.argv[2]).read().strip().splitlines()
    print("peers: none measured" + (f" ({note[-1]})" if note else ""))
workloads = sorted({s["workload"] for s in salt})
names = sorted({p for p, _ in peers})
head = f"{'workload':<9}{'salt executor':<15}{'salt µs/node':>14}" + "".join(f"{n + ' µs':>22}{'ratio':>8}" for n in names)
print(head)
for w in workloads:
    for s in (s for s in salt if s["workload"] == w):
        us = s["per_node_us"]
        row = f"{w:<9}{s['executor']:<15}{us:>14.1f}"
        for n in names:
            v = peers.get((n, w))
            if v:
                p = statistics.median(v)
                row += f"{p:>22.1f}{p / us:>7.0f}x"
            else:
                row += f"{'-':>22}{'':>8}"
        print(row)
EOF
rm -rf "$out"
