#!/usr/bin/env bash
# The gateway under load steps (BENCHMARKS.md, "The gateway under overload"):
# a nats-server and a release gateway with the shipped settings on ports of
# their own, then `aether emit` at 10k to 800k waves/s for 8 s each; prints
# what the gateway observed, shed and skipped, and its memory, as a table.
#
#   cargo build --release -p aether-gateway -p aether-cli
#   bash aether-gateway/benches/overload.sh
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PATH="$PATH:/usr/sbin"
BIN="${CARGO_TARGET_DIR:-target}/release"
W="$(mktemp -d)"
mkdir -p "$W/cfg" && cp config/default.toml "$W/cfg/"
NATS_PORT="${NATS_PORT:-14555}"
GW_PORT="${GW_PORT:-19555}"
nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$W/js" >"$W/nats.log" 2>&1 &
NATS=$!
sleep 1
URL="nats://127.0.0.1:$NATS_PORT"
AETHER__GATEWAY__LISTEN="127.0.0.1:$GW_PORT" "$BIN/aether-gateway" --config-dir "$W/cfg" --nats "$URL" \
    >"$W/gw.out" 2>"$W/gw.log" &
GW=$!
trap 'kill $GW $NATS 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT
sleep 2
metrics() { curl -s "127.0.0.1:$GW_PORT/metrics"; }
sum() { echo "$1" | awk -v s="$2" 'index($0, s) == 1 { n += $NF } END { printf "%.0f", n }'; }
echo "| offered waves/s | emitted waves/s | observed | observer shed (queue_full) | physics observed | physics skipped (over budget / buffer full) | gateway RSS MB |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for rate in 10000 50000 100000 200000 400000 800000; do
    count=$((rate * 8))
    before=$(metrics)
    start=$(date +%s.%N)
    "$BIN/aether" emit load.x '{"n":1}' --count "$count" --rate "$rate" --nats "$URL" 2>/dev/null
    end=$(date +%s.%N)
    sleep 3
    after=$(metrics)
    delta() { echo $(($(sum "$after" "$1") - $(sum "$before" "$1"))); }
    emitted=$(echo "$count / ($end - $start)" | bc)
    rss=$(($(sum "$after" process_resident_memory_bytes) / 1048576))
    echo "| $rate | $emitted | $(delta 'aether_gateway_waves_observed_total{') |" \
        "$(delta 'aether_gateway_observer_dropped_total{reason="queue_full"}') |" \
        "$(delta aether_physics_observed_total) |" \
        "$(delta 'aether_physics_skipped_total{reason="over_budget"}') / $(delta 'aether_physics_skipped_total{reason="buffer_full"}') |" \
        "$rss |"
done
