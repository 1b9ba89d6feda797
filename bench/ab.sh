#!/bin/bash
# A/B throughput of two revisions of nnserve on this machine, alternating so that drift hits both alike:
#   bench/ab.sh OLD_REV [ROUNDS]     (the new side is the working tree)
# Each round starts `bentoml serve` (default settings, artifacts/ of the working tree) from each tree in turn and
# drives it with wrk pinned to core 1 (32 connections, 3 s warm-up, 15 s): POST /v1/classify with one PNG digit,
# then POST /v2/models/mnist-cnn/infer with the same digit as a JSON FP32 tensor. Prints one line per tree and round.
set -euo pipefail
OLD=${1:?usage: bench/ab.sh OLD_REV [ROUNDS]}
ROUNDS=${2:-6}
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'git -C "$REPO" worktree remove --force "$WORK/old" >/dev/null 2>&1 || true' EXIT
git -C "$REPO" worktree add --detach "$WORK/old" "$OLD" >/dev/null 2>&1
"$REPO/.venv/bin/python" - "$REPO" "$WORK" <<'PY'
import base64, glob, io, json, sys
import numpy as np
from PIL import Image
repo, work = sys.argv[1], sys.argv[2]
png = open(sorted(glob.glob(f"{repo}/loadtest/samples/digits/*.png"))[0], "rb").read()
json.dump({"model": "mnist-cnn", "images": [base64.b64encode(png).decode()]}, open(f"{work}/v1.json", "w"))
meta = json.load(open(f"{repo}/artifacts/mnist-cnn/model.json"))
pre = meta["preprocessing"]
x = (np.asarray(Image.open(io.BytesIO(png)).convert("L").resize((28, 28)), np.float32) / 255 - pre["mean"][0]) / pre["std"][0]
tensor = {"name": meta["inputs"][0]["name"], "shape": [1, 1, 28, 28], "datatype": "FP32", "data": x.ravel().tolist()}
json.dump({"inputs": [tensor]}, open(f"{work}/v2.json", "w"))
for name in ("v1", "v2"):
    open(f"{work}/{name}.lua", "w").write(
        f'local f = io.open("{work}/{name}.json", "rb") wrk.method = "POST" wrk.body = f:read("*a") '
        'wrk.headers["Content-Type"] = "application/json"'
    )
PY
rps() { awk '/Requests\/sec/ {print $2}'; }
non2xx() { awk '/Non-2xx/ {print $5}'; }
port=3300
for round in $(seq "$ROUNDS"); do
  for side in old new; do
    tree=$([ $side = old ] && echo "$WORK/old" || echo "$REPO")
    port=$((port + 1))
    (cd "$tree" && NNSERVE_MODEL_DIR="$REPO/artifacts" BENTOML_DO_NOT_TRACK=True BENTOML_HOME="$WORK/home-$port" \
      setsid "$REPO/.venv/bin/bentoml" serve service.service:NNServe --host 127.0.0.1 --port $port \
      > "$WORK/serve-$side-$round.log" 2>&1 &)
    for _ in $(seq 120); do curl -sf "localhost:$port/readyz" >/dev/null && break; sleep 0.5; done
    taskset -c 1 wrk -t1 -c32 -d3s -s "$WORK/v1.lua" "http://127.0.0.1:$port/v1/classify" >/dev/null
    o1=$(taskset -c 1 wrk -t1 -c32 -d15s -s "$WORK/v1.lua" "http://127.0.0.1:$port/v1/classify")
    o2=$(taskset -c 1 wrk -t1 -c32 -d15s -s "$WORK/v2.lua" "http://127.0.0.1:$port/v2/models/mnist-cnn/infer")
    echo "round $round $side v1 $(echo "$o1" | rps) req/s (non-2xx: $(echo "$o1" | non2xx)) v2 $(echo "$o2" | rps) req/s (non-2xx: $(echo "$o2" | non2xx))"
    pkill -f "port $port" || true
    for _ in $(seq 40); do pgrep -f "port $port" >/dev/null || break; sleep 0.5; done
    sleep 2
  done
done
