#!/usr/bin/env bash
# make test-deploy: the docker-compose deployment, for real, on this machine (as root).
#
# Starts a private Docker engine (own data root, socket and pidfile; no iptables, no default bridge), builds
# local stand-ins for the public base images the Dockerfiles and docker-compose.yml name (nothing can be
# pulled here), builds nnserve's image from the Dockerfile users run, brings up api + prometheus with the
# docker-compose.yml users run, and checks from outside:
#   1. the api container turns healthy and /readyz answers 200 through the published port;
#   2. a real classification through the published port, and the Open Inference Protocol's /v2 metadata;
#   3. Prometheus, in its container, reports the api target up and returns nnserve's series via its HTTP API;
#   4. a short headless Locust run from the locust service (loadtest profile) ends with zero failures.
# Then it tears the stack down and stops the engine it started (by pid). Grafana has no Debian package, so
# its provisioning and dashboard are validated statically (tests/test_deploy_static.py), not run here.
#
# Stand-ins (tagged with the public names, in this private engine only):
#   python:3.11-slim         Debian bookworm (debootstrap minbase) + Python 3.11 as a venv in /usr/local, so
#                            /usr/local/bin/python and pip are where the official image has them; it trusts
#                            this machine's CA bundle (copied in after the apt step) for pip
#   prom/prometheus:v3.1.0   the same base + Debian's prometheus package (2.42), entrypoint /usr/bin/prometheus
#   locustio/locust:2.47.0   the python stand-in + pip install locust==2.47.0, entrypoint locust
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
STATE="${NNSERVE_DOCKER_STATE:-/var/lib/nnserve-docker}"
RUNDIR=/run/nnserve-docker
SOCK="$RUNDIR/docker.sock"
PIDFILE="$RUNDIR/docker.pid"
export DOCKER_HOST="unix://$SOCK"
export COMPOSE_PROJECT_NAME=nnserve-deploy-test
export COMPOSE_INTERACTIVE_NO_CLI=1
CA=/etc/ssl/certs/ca-certificates.crt
WORK="$(mktemp -d)"
STARTED_ENGINE=0

log() { printf '\n== %s\n' "$*"; }
die() { printf 'test-deploy FAILED: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it starts a Docker engine)"

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v promtool >/dev/null || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [[ " ${need[*]} " == *" prometheus "* ]]; then
    # installed just now for promtool: Debian's package also starts a host Prometheus, which this test does not want
    systemctl stop prometheus 2>/dev/null || true
fi

compose() { docker-compose -f "$REPO/docker-compose.yml" --project-directory "$REPO" "$@"; }

cleanup() {
    local rc=$?
    if [ "$STARTED_ENGINE" = 1 ]; then
        log "tearing down"
        if [ "$rc" != 0 ]; then
            compose --profile loadtest logs --no-color --tail 40 api prometheus 2>/dev/null || true
        fi
        compose --profile loadtest down -v --remove-orphans >/dev/null 2>&1 || true
        if [ -s "$PIDFILE" ]; then
            pid="$(cat "$PIDFILE")"
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    rm -rf "$WORK"
    [ "$rc" = 0 ] && echo "test-deploy passed" || echo "test-deploy failed (engine log: $STATE.log)"
}
trap cleanup EXIT

log "starting a private Docker engine ($SOCK, data in $STATE)"
mkdir -p "$STATE" "$RUNDIR"
if [ -S "$SOCK" ] && docker info >/dev/null 2>&1; then
    die "an engine already answers on $SOCK (a previous run still up?); stop it first"
fi
rm -f "$SOCK" "$PIDFILE"
setsid dockerd --data-root "$STATE/data" --exec-root "$RUNDIR/exec" --pidfile "$PIDFILE" \
    --host "unix://$SOCK" --iptables=false --bridge=none >"$STATE.log" 2>&1 < /dev/null &
STARTED_ENGINE=1
for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
docker info >/dev/null 2>&1 || die "dockerd did not start; see $STATE.log"

build() { docker build --network host -q "$@" >/dev/null; }

if ! docker image inspect nnserve-standin/debian:bookworm >/dev/null 2>&1; then
    log "debootstrap a Debian bookworm base (once per data root)"
    rm -rf "$STATE/rootfs"
    debootstrap --variant=minbase bookworm "$STATE/rootfs" http://deb.debian.org/debian >/dev/null
    tar -C "$STATE/rootfs" -c . | docker import - nnserve-standin/debian:bookworm >/dev/null
    rm -rf "$STATE/rootfs"
fi

log "stand-ins for python:3.11-slim, prom/prometheus:v3.1.0, locustio/locust:2.47.0"
mkdir -p "$WORK/python" "$WORK/prometheus" "$WORK/locust"
cp "$CA" "$WORK/python/ca.crt"
cat >"$WORK/python/Dockerfile" <<'EOF'
FROM nnserve-standin/debian:bookworm
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv ca-certificates wget && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /usr/local && /usr/local/bin/python -m pip --version
COPY ca.crt /etc/ssl/certs/ca-certificates.crt
RUN printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > /etc/pip.conf
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt LANG=C.UTF-8
CMD ["python3"]
EOF
build -t python:3.11-slim "$WORK/python"
cat >"$WORK/prometheus/Dockerfile" <<'EOF'
FROM nnserve-standin/debian:bookworm
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus wget \
    && rm -rf /var/lib/apt/lists/* && mkdir -p /prometheus
ENTRYPOINT ["/usr/bin/prometheus"]
EOF
build -t prom/prometheus:v3.1.0 "$WORK/prometheus"
cat >"$WORK/locust/Dockerfile" <<'EOF'
FROM python:3.11-slim
RUN pip install --no-cache-dir locust==2.47.0
ENTRYPOINT ["locust"]
EOF
build -t locustio/locust:2.47.0 "$WORK/locust"

log "building nnserve:latest and nnserve-locust:latest from the repo's Dockerfiles"
build -t nnserve:latest "$REPO"
build -f "$REPO/deploy/locust/Dockerfile" -t nnserve-locust:latest "$REPO/deploy"
docker run --rm --entrypoint python nnserve:latest -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
    || die "torch is in the serving image"
[ "$(docker run --rm --entrypoint id nnserve:latest -u)" != 0 ] || die "the serving image runs as root"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
API_PORT="$(free_port)"
GRPC_PORT="$(free_port)"
export API_HOST_PORT="$API_PORT" API_GRPC_HOST_PORT="$GRPC_PORT"
log "docker-compose up api prometheus (api published on 127.0.0.1:$API_PORT, gRPC on 127.0.0.1:$GRPC_PORT)"
compose up -d --no-build api prometheus
cid="$(compose ps -q api)"
for _ in $(seq 1 90); do
    state="$(docker inspect -f '{{.State.Health.Status}}' "$cid")"
    [ "$state" = healthy ] && break
    [ "$state" = unhealthy ] && die "the api container is unhealthy"
    sleep 2
done
[ "$state" = healthy ] || die "the api container did not turn healthy (last: $state)"
echo "api container: healthy"

code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$API_PORT/readyz")"
[ "$code" = 200 ] || die "/readyz answered $code"
echo "/readyz: 200"

digit="$(ls "$REPO"/loadtest/samples/digits/*_7.png | head -1)"
printf '{"model": "mnist-cnn", "images": ["%s"]}' "$(base64 -w0 "$digit")" >"$WORK/classify.json"
answer="$(curl -s -H 'content-type: application/json' --data-binary @"$WORK/classify.json" \
    "http://127.0.0.1:$API_PORT/v1/classify")"
echo "classify $(basename "$digit"): $answer" | cut -c1-200
python3 -c 'import json, sys; p = json.loads(sys.argv[1])["predictions"][0]; sys.exit(p["label"] != "7")' "$answer" \
    || die "the classification through the published port is wrong: $answer"
v2="$(curl -s "http://127.0.0.1:$API_PORT/v2")"  # the image does not install the package: /v2 must not need it
echo "/v2: $v2"
python3 -c 'import json, sys; sys.exit(json.loads(sys.argv[1]).get("name") != "nnserve")' "$v2" \
    || die "/v2 server metadata through the published port is wrong: $v2"
meta="$(curl -s "http://127.0.0.1:$API_PORT/v2/models/mnist-cnn")"
python3 -c 'import json, sys; sys.exit(json.loads(sys.argv[1]).get("platform") != "onnxruntime_onnx")' "$meta" \
    || die "/v2/models/mnist-cnn is wrong: $meta"
echo "/v2/models/mnist-cnn: $meta" | cut -c1-200
# the protocol over gRPC through the published port, with the official client (from make test's environment)
"$REPO/.venv/bin/python" - "127.0.0.1:$GRPC_PORT" "$digit" <<'PY' || die "gRPC through the published port failed"
import sys, numpy as np, tritonclient.grpc as g
from PIL import Image
c = g.InferenceServerClient(sys.argv[1])
assert c.is_server_ready() and c.is_model_ready("mnist-cnn")
x = (np.asarray(Image.open(sys.argv[2]).convert("L"), np.float32)[None, None] / 255.0 - 0.1307) / 0.3081  # an MNIST row
t = g.InferInput("input", list(x.shape), "FP32")
t.set_data_from_numpy(x)
top = c.infer("mnist-cnn", [t], outputs=[g.InferRequestedOutput("logits", class_count=1)]).as_numpy("logits")
print("gRPC ModelInfer mnist-cnn:", top[0][0].decode())
assert top[0][0].decode().endswith(":7"), top
PY

prom() { compose exec -T prometheus wget -qO- "http://127.0.0.1:9090/api/v1/$1"; }
for _ in $(seq 1 30); do
    up="$(prom 'query?query=up%7Bjob%3D%22nnserve%22%7D' 2>/dev/null || true)"
    python3 -c 'import json, sys; r = json.loads(sys.argv[1])["data"]["result"]; sys.exit(not r or any(x["value"][1] != "1" for x in r))' \
        "$up" 2>/dev/null && break
    sleep 2
done
echo "prometheus up{job=\"nnserve\"}: $up" | cut -c1-240
python3 -c 'import json, sys; r = json.loads(sys.argv[1])["data"]["result"]; sys.exit(not r or any(x["value"][1] != "1" for x in r))' \
    "$up" || die "Prometheus does not report the api target up"
has_series='import json, sys; r = json.loads(sys.argv[1])["data"]["result"]; sys.exit(not any(float(x["value"][1]) > 0 for x in r))'
for _ in $(seq 1 30); do  # the classification above shows up at the next scrape (every 5 s)
    series="$(prom 'query?query=nnserve_inference_seconds_count' 2>/dev/null || true)"
    python3 -c "$has_series" "$series" 2>/dev/null && break
    sleep 2
done
echo "prometheus nnserve_inference_seconds_count: $series" | cut -c1-240
python3 -c "$has_series" "$series" || die "Prometheus has no nnserve series from the api"
rules="$(prom rules)"
python3 -c 'import json, sys; g = json.loads(sys.argv[1])["data"]["groups"]; sys.exit(not g)' "$rules" \
    || die "Prometheus loaded no alert rules"
echo "prometheus alert rules: loaded"

log "headless Locust from the locust service (20 s, 4 users, zero failures required)"
compose --profile loadtest run --rm --no-deps -e USERS=4 -e STEP_COUNT=2 -e DURATION=20s \
    -e LOADTEST_WAIT_MIN_S=0.05 -e LOADTEST_WAIT_MAX_S=0.2 -e LOCUST_MAX_FAIL_RATIO=0 \
    locust-master -f /mnt/locust/locustfile.py --headless --host http://api:3000 --only-summary \
    || die "the Locust run failed (failures or thresholds)"
