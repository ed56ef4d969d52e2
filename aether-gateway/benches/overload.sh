#!/usr/bin/env bash
# The gateway under load steps (BENCHMARKS.md, "The gateway under overload"):
# a nats-server, a release gateway and beta with the shipped settings on
# ports of their own, then `aether emit` at 10k to 800k waves/s for 8 s
# each while alpha orders at 250 a second; prints what the gateway observed,
# shed and skipped, its memory, and the saga's answers, as a table; then the
# saga alone at rising order rates.
#
#   cargo build --release -p aether-gateway -p aether-cli -p aether-service-alpha -p aether-service-beta
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
(cd "$W" && exec "$BIN/aether-service-beta" --config-dir "$W/cfg" --nats "$URL" --instance beta-1 \
    >"$W/beta.out" 2>"$W/beta.log") &
BETA=$!
trap 'kill $GW $BETA $NATS 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT
sleep 2
# alpha RATE COUNT: orders at RATE until COUNT, waits for every answer;
# prints "answered overdue seconds".
alpha() {
    local start end line
    start=$(date +%s.%N)
    line=$(cd "$W" && "$BIN/aether-service-alpha" --config-dir "$W/cfg" --nats "$URL" \
        --instance alpha-1 --rate "$1" --count "$2" 2>>"$W/alpha.log" | grep '^service-alpha:')
    end=$(date +%s.%N)
    field() { echo "$line" | grep -o "$1 [0-9]*" | head -1 | awk '{print $2}'; }
    echo "$(($(field confirmed) + $(field cancelled))) $(field overdue) $(echo "$end - $start" | bc)"
}
metrics() { curl -s "127.0.0.1:$GW_PORT/metrics"; }
sum() { echo "$1" | awk -v s="$2" 'index($0, s) == 1 { n += $NF } END { printf "%.0f", n }'; }
echo "| offered waves/s | emitted waves/s | observed | observer shed (queue_full) | physics observed | physics skipped (over budget / buffer full) | gateway RSS MB | saga: orders answered of 2000 (overdue), seconds |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for rate in 10000 50000 100000 200000 400000 800000; do
    count=$((rate * 8))
    before=$(metrics)
    alpha 250 2000 >"$W/saga" &
    SAGA=$!
    start=$(date +%s.%N)
    "$BIN/aether" emit load.x '{"n":1}' --count "$count" --rate "$rate" --nats "$URL" 2>/dev/null
    end=$(date +%s.%N)
    wait $SAGA
    read -r answered overdue took <"$W/saga"
    sleep 3
    after=$(metrics)
    delta() { echo $(($(sum "$after" "$1") - $(sum "$before" "$1"))); }
    emitted=$(echo "$count / ($end - $start)" | bc)
    rss=$(($(sum "$after" process_resident_memory_bytes) / 1048576))
    echo "| $rate | $emitted | $(delta 'aether_gateway_waves_observed_total{') |" \
        "$(delta 'aether_gateway_observer_dropped_total{reason="queue_full"}') |" \
        "$(delta aether_physics_observed_total) |" \
        "$(delta 'aether_physics_skipped_total{reason="over_budget"}') / $(delta 'aether_physics_skipped_total{reason="buffer_full"}') |" \
        "$rss | $answered ($overdue), $took |"
done
echo
echo "| orders offered/s | orders | answered (overdue) | seconds to the last answer | answered/s |"
echo "| --- | --- | --- | --- | --- |"
for rate in 500 1000 2000 4000 8000; do
    count=$((rate * 5))
    read -r answered overdue took <<<"$(alpha "$rate" "$count")"
    echo "| $rate | $count | $answered ($overdue) | $took | $(echo "$answered / $took" | bc) |"
done
