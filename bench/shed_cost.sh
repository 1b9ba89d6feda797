#!/usr/bin/env bash
# What one shed request (429) costs the server: mnist-cnn behind NNSERVE_MAX_CONCURRENCY=2 (1 per worker), wrk
# at 64 connections posting one PNG to /v1/classify, the server's CPU time (its whole process tree) read before
# and after. Nearly every request is a 429, so the CPU per request is the cost of shedding one.
#   bash bench/shed_cost.sh          (MC=<limit> C=<connections> PORT=<port> to change the defaults)
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-3412}; PY=.venv/bin/python; WORK=$(mktemp -d)
NNSERVE_MAX_CONCURRENCY=${MC:-2} NNSERVE_DRAIN_S=0 NNSERVE_MODEL_DIR=$PWD/artifacts NNSERVE_MODELS='["mnist-cnn"]' \
    BENTOML_DO_NOT_TRACK=True .venv/bin/bentoml serve service.service:NNServe --host 127.0.0.1 --port "$PORT" \
    >"$WORK/serve.log" 2>&1 &
SP=$!
trap 'kill $SP 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 90); do curl -sf "localhost:$PORT/readyz" >/dev/null && break; sleep 1; done
printf '{"model":"mnist-cnn","images":["%s"]}' "$(base64 -w0 < "$(ls loadtest/samples/digits/*.png | head -1)")" \
    >"$WORK/body.json"
cat >"$WORK/post.lua" <<LUA
local f = assert(io.open("$WORK/body.json", "rb"))
wrk.method = "POST"; wrk.body = f:read("*a"); f:close()
wrk.headers["Content-Type"] = "application/json"
LUA
cpu() { $PY -c "from bench.common import ServerTree; print(ServerTree($SP).cpu())"; }
wrk -t1 -c32 -d3s -s "$WORK/post.lua" "http://127.0.0.1:$PORT/v1/classify" >/dev/null  # warm-up
C0=$(cpu)
${PROFILE:+eval "$PROFILE" &}
wrk -t1 -c"${C:-64}" -d10s -s "$WORK/post.lua" "http://127.0.0.1:$PORT/v1/classify" | tee "$WORK/wrk.out"
C1=$(cpu)
$PY -c "
import re, sys
t = open('$WORK/wrk.out').read()
n = int(re.search(r'(\d+) requests in', t).group(1))
shed = int(re.search(r'Non-2xx or 3xx responses: (\d+)', t).group(1)) if 'Non-2xx' in t else 0
print(f'{n} requests, {shed} of them not 2xx; server CPU {$C1 - $C0:.2f} s = {($C1 - $C0) * 1e3 / n:.3f} ms per request')"
