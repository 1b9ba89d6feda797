"""``make bench-peers``: nnserve against the servers a user would pick instead, on one machine, in one run.

    python -m bench.peers --json docs/peers.json [--rounds 3] [--seconds 10] [--only name,name] [--conns 1,8,32]

Same ONNX model (artifacts/mnist-cnn), same payload (bench/ab.py's bodies(): one PNG digit for the typed route
POST /v1/classify, the same digit as mnist-cnn's FP32 input tensor for POST /v2/models/mnist-cnn/infer), every
server with 2 workers, same load. Each peer does the same work per request (bench/peers/peer_mnist.py):
base64 + PNG decoding with Pillow and preprocessing to 1x1x28x28 (typed route) or the prepared tensor from the
JSON (/v2), one onnxruntime run on one intra-op thread, softmax and top 3, a JSON answer.

    nnserve       the repo (.venv): ``bentoml serve service.service:NNServe``, NNSERVE_API_WORKERS=2; both routes
    fastapi       hand-written FastAPI + ``uvicorn --workers 2``, onnxruntime inline (peer_fastapi.py); /v1
    bentoml-docs  BentoML 1.4 as its docs write a service: batchable API, workers=2 (peer_bentoml.py); /v1
    litserve      LitServe LitAPI, workers_per_device=2 on cpu (peer_litserve.py); /v1
    kserve        KServe kserve.Model + ModelServer(workers=2) (peer_kserve.py); /v2
    mlserver      MLServer custom runtime, parallel_workers=2 (peer_mlserver.py); /v2
    pytriton      NVIDIA PyTriton, Triton's CPU build, 2 model instances (peer_pytriton.py); /v2

Every peer runs in its own virtual environment, .peers/<peer>/ (git-ignored), with the versions pinned in
bench/peers/venvs.py, installed when they change. Each runs with its defaults but for one thing: no log line per
request, as nnserve ships (its access log is off); KServe, BentoML, MLServer (debug) and LitServe (level info)
log every request by default, which cost KServe most of its throughput here, so their peer files turn it off.

The load is bench/run.py's ``wrk()``: one wrk thread pinned to the last core, the server's CPU per request from
its process tree. Before its runs every server answers each route's body once and must give the label that
nnserve's own preprocessing and the ONNX graph give the digit (computed in process); a peer that fails to
install, start or answer right is in the table with the reason, never dropped.

One server is up at a time: all seven at once would be some 30 processes on 2 cores, and an idle server is not
idle by contract (pollers, health checks, metrics), so each round starts a server, warms it up, runs every
concurrency on each of its routes, measures its CPU while idle (in the JSON: all under ~1 % of a core when
measured), and stops it, and any process of its tree left behind, before the next starts. The order of the
servers rotates every round and reverses every other round, so that the machine's drift hits them all alike;
the table shows medians over the rounds.

Each run also records the share of the work each of the server's worker processes did, by their CPU time
(bench/peers/servers.py says which processes are the workers and why CPU time is the proxy); the table shows
the least busy worker's share (the goal: each of 2 workers at least 35 %). nnserve's ratios are against the
hand-written FastAPI app on the typed route and against KServe on /v2, each the median over rounds of the
paired ratio (both ran in the same round).
"""
