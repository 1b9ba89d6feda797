"""deploy/k8s: the kustomize overlays and the KServe resources render, pass strict schemas (Kubernetes 1.30, KServe's
and the Prometheus Operator's CRDs, KServe's SDK), keep the house rules (tests/k8s_checks.py), break them when a
probe, a limit or a label goes, and the volume overlay's Deployment runs as rendered (tests/k8s_pod.py): its
command and environment on the shipped models, probed over HTTP, a new model version swapped in from the volume,
and SIGTERM drained within the termination grace period.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from tests.k8s_checks import (
    CRDS,
    K8S,
    OVERLAYS,
    PROBES,
    SCHEMAS,
    quantity,
    render,
    renderer,
    schema_errors,
    sdk_errors,
    settings_of,
    violations,
)
from tests.k8s_pod import Pod, image_config, isolated

REPO = Path(__file__).resolve().parent.parent
ADAPTER_RULES = K8S / "overlays" / "inflight-hpa" / "prometheus-adapter-rules.yaml"
VENDORED = {  # deploy/k8s/README.md says where each comes from
    "serving.kserve.io_inferenceservices.yaml": "57c3bf13f77de94678bf2ae3748056ec071ad2b9e88d6a28f44fb4710758fcff",
    "serving.kserve.io_servingruntimes.yaml": "380a3e1e1444cef9b8b88819596692728868205a2147dc66423be469a4a7bbb1",
    "monitoring.coreos.com_servicemonitors.yaml": "a99047972c9dd7679ce2050b9968e8a08773492e671b3e17abd476d42aa78a32",
}
# The adapter's configuration file as kubernetes-sigs/prometheus-adapter v0.12.0 reads it (pkg/config/config.go:
# MetricsDiscoveryConfig, DiscoveryRule, ResourceMapping, NameMapping, RegexFilter): its fields, no others.
_STR = {"type": "string"}
ADAPTER_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["rules"],
    "properties": {
        "rules": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["seriesQuery", "resources", "name", "metricsQuery"],
                "properties": {
                    "seriesQuery": _STR,
                    "metricsQuery": _STR,
                    "seriesFilters": {"type": "array", "items": {"type": "object", "additionalProperties": False,
                                                                  "properties": {"is": _STR, "isNot": _STR}}},
                    "resources": {"type": "object", "additionalProperties": False, "properties": {
                        "template": _STR, "namespaced": {"type": "boolean"},
                        "overrides": {"type": "object", "additionalProperties": {
                            "type": "object", "additionalProperties": False, "required": ["resource"],
                            "properties": {"group": _STR, "resource": _STR}}}}},
                    "name": {"type": "object", "additionalProperties": False,
                             "properties": {"matches": _STR, "as": _STR}},
                },
            },
        },
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    if renderer() is None:
        why = "neither kubectl (kustomize v5) nor kustomize is installed"
        pytest.fail(why) if os.environ.get("CI") else pytest.skip(why)
    return {name: render(K8S / "overlays" / name) for name in OVERLAYS} | {"kserve": render(K8S / "kserve")}


def uid() -> int:
    return image_config()["uid"]


def adapter_rules() -> list[dict[str, Any]]:
    return yaml.safe_load(ADAPTER_RULES.read_text())["rules"]


def adapter_metrics() -> frozenset[str]:
    """The custom metric names the adapter's rules serve: each rule's series name through name.matches -> as."""
    names = set()
    for rule in adapter_rules():
        series = re.match(r"(\w+)\{", rule["seriesQuery"])
        assert series, rule["seriesQuery"]
        pattern, to = rule["name"]["matches"], re.sub(r"\$(\d+)", r"\\\1", rule["name"].get("as", "$0"))
        if re.search(pattern, series[1]):
            names.add(re.sub(pattern, to.replace(r"\0", r"\g<0>"), series[1]))
    return frozenset(names)


def one(resources: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [r for r in resources if r["kind"] == kind and name in (None, r["metadata"]["name"])]
    return found


def container(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return one(resources, "Deployment")["spec"]["template"]["spec"]["containers"][0]


# ---- static --------------------------------------------------------------------------------------------------------


def test_the_vendored_crds_are_the_release_files():
    readme = (K8S / "README.md").read_text()
    for name, sha in VENDORED.items():
        assert hashlib.sha256((SCHEMAS / name).read_bytes()).hexdigest() == sha, f"{name} was changed"
        assert sha in readme, f"deploy/k8s/README.md does not record {name}'s sha256"
    assert set(VENDORED) == set(CRDS.values())


@pytest.mark.parametrize("name", [*OVERLAYS, "kserve"])
def test_every_resource_passes_its_strict_schema(rendered, name):
    kinds = {r["kind"] for r in rendered[name]}
    if name == "kserve":
        assert kinds == {"ServingRuntime", "InferenceService", "PersistentVolumeClaim"}
        assert sdk_errors(*[r for r in rendered[name] if r["kind"] != "PersistentVolumeClaim"]) == []
    else:
        assert {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
        assert {"ServiceMonitor", "ServiceAccount"} <= kinds
    assert [e for r in rendered[name] for e in schema_errors(r)] == []


@pytest.mark.parametrize("name", [*OVERLAYS, "kserve"])
def test_the_house_rules_hold(rendered, name):
    assert violations(rendered[name], uid(), adapter_metrics()) == []


def test_the_overlays_differ_where_they_say(rendered):
    """baked: the image's models; volume: the claim at /models with poll model control; inflight-hpa: baked + the
    in-flight metric. The KServe runtime reads the models where KServe mounts a storageUri."""
    r = rendered
    assert image_config()["env"]["NNSERVE_MODEL_DIR"] == one(r["baked"], "ConfigMap")["data"]["NNSERVE_MODEL_DIR"]
    assert {"NNSERVE_MODEL_DIR": "/models", "NNSERVE_MODEL_CONTROL": "poll"}.items() <= one(r["volume"], "ConfigMap")[
        "data"
    ].items()
    assert {m["mountPath"]: m.get("readOnly") for m in container(r["volume"])["volumeMounts"]}["/models"] is True
    hpa = one(r["inflight-hpa"], "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert [m["type"] for m in hpa] == ["Resource", "Pods"]
    runtime = one(r["kserve"], "ServingRuntime")["spec"]["containers"][0]
    assert {e["name"]: e.get("value") for e in runtime["env"]}["NNSERVE_MODEL_DIR"] == "/mnt/models"
    uris = {
        i["metadata"]["name"]: i["spec"]["predictor"]["model"] for i in r["kserve"] if i["kind"] == "InferenceService"
    }
    assert uris["nnserve"]["storageUri"] == uris["nnserve-onnx"]["storageUri"]  # the same files
    assert uris["nnserve-onnx"]["modelFormat"]["name"] == "onnx" and "runtime" not in uris["nnserve-onnx"]


def test_the_adapter_rule_serves_the_hpa_metric():
    import jsonschema

    jsonschema.validate(yaml.safe_load(ADAPTER_RULES.read_text()), ADAPTER_SCHEMA)
    for rule in adapter_rules():
        assert all(f"<<.{t}>>" in rule["metricsQuery"] for t in ("Series", "LabelMatchers", "GroupBy"))
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}  # the operator's target labels
    assert adapter_metrics() == {"nnserve_requests_in_flight"}


def test_the_shipped_graphs_batch_on_their_first_axis():
    """What Triton's generated configuration needs to batch a model.onnx (the ONNX InferenceService): every input
    and output has a symbolic first axis."""
    import onnxruntime as ort

    for path in sorted((REPO / "artifacts").glob("*/model.onnx")):
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for t in [*s.get_inputs(), *s.get_outputs()]:
            assert isinstance(t.shape[0], str), f"{path}: {t.name} has a fixed first axis {t.shape}"


Mutation = Callable[[list[dict[str, Any]]], None]


def _dep(rs: list[dict[str, Any]]) -> dict[str, Any]:
    return container(rs)


def _rt(rs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(rs, "ServingRuntime")["spec"]["containers"][0]


def _pod(rs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(rs, "Deployment")["spec"]["template"]["spec"]


def _settings(rs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(rs, "ConfigMap")["data"]


def _hpa(rs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(rs, "HorizontalPodAutoscaler")["spec"]


def _model(name: str) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    return lambda rs: one(rs, "InferenceService", name)["spec"]["predictor"]["model"]


BREACHES: list[tuple[str, str, Mutation, str]] = [
    *[("volume", f"no {p}", lambda rs, p=p: _dep(rs).pop(p), f"no {p}") for p in PROBES],
    *[("kserve", f"runtime without {p}", lambda rs, p=p: _rt(rs).pop(p), f"no {p}") for p in PROBES],
    ("baked", "no memory limit", lambda rs: _dep(rs)["resources"]["limits"].pop("memory"), "no memory request"),
    ("kserve", "runtime without limits", lambda rs: _rt(rs)["resources"].pop("limits"), "no cpu request and limit"),
    ("baked", "a label gone", lambda rs: one(rs, "Service")["metadata"]["labels"].pop("app.kubernetes.io/part-of"),
     "no label app.kubernetes.io/part-of"),
    ("baked", "a probe on a keyed route", lambda rs: _dep(rs)["readinessProbe"]["httpGet"].update(path="/v1/models"),
     "needs the API key"),
    ("baked", "a probe on another port", lambda rs: _dep(rs)["livenessProbe"]["httpGet"].update(port="grpc"),
     "is not the HTTP listener"),
    ("baked", "a short grace period", lambda rs: _pod(rs).update(terminationGracePeriodSeconds=30),
     "terminationGracePeriodSeconds"),
    ("baked", "an unknown setting", lambda rs: _settings(rs).update(NNSERVE_MAX_BATCH="8"), "not a setting"),
    ("baked", "a bad setting", lambda rs: _settings(rs).update(NNSERVE_DRAIN_S="-1"), "settings rejected"),
    ("baked", "the key under another name",
     lambda rs: next(e for e in _dep(rs)["env"] if "valueFrom" in e).update(name="KEY"), "reads its key"),
    ("baked", "a rollout that drops pods",
     lambda rs: one(rs, "Deployment")["spec"]["strategy"]["rollingUpdate"].update(maxUnavailable=1), "maxUnavailable"),
    ("baked", "one replica", lambda rs: _hpa(rs).update(minReplicas=1), "fewer than 2"),
    ("baked", "no honorLabels", lambda rs: one(rs, "ServiceMonitor")["spec"]["endpoints"][0].pop("honorLabels"),
     "exported_endpoint"),
    ("inflight-hpa", "a metric no rule serves",
     lambda rs: _hpa(rs)["metrics"][1]["pods"]["metric"].update(name="inflight"), "no adapter rule serves inflight"),
    ("kserve", "protocol v1", lambda rs: _model("nnserve")(rs).update(protocolVersion="v1"), "not the Open Inference"),
    ("kserve", "another runtime", lambda rs: _model("nnserve")(rs).update(runtime="mlserver"), "runtime mlserver is"),
    ("kserve", "another claim", lambda rs: _model("nnserve-onnx")(rs).update(storageUri="pvc://m/"), "names no claim"),
    ("kserve", "the image untagged", lambda rs: _rt(rs).update(image="nnserve"), "is not tagged"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "what", "mutate", "expected"), BREACHES, ids=[b[1] for b in BREACHES])
def test_each_breach_of_a_house_rule_is_caught(rendered, name, what, mutate, expected):
    broken = copy.deepcopy(rendered[name])
    mutate(broken)
    found = violations(broken, uid(), adapter_metrics())
    assert any(expected in v for v in found), found


SCHEMA_BREACHES: list[tuple[str, str, Mutation]] = [
    ("volume", "a misspelt probe", lambda rs: _dep(rs).update(readynessProbe={"httpGet": {"path": "/readyz"}})),
    ("volume", "a port as text", lambda rs: _dep(rs)["ports"][0].update(containerPort="3000")),
    ("baked", "an unknown HPA field", lambda rs: _hpa(rs).update(targetCPU=60)),
    ("baked", "a misspelt ServiceMonitor field",
     lambda rs: one(rs, "ServiceMonitor")["spec"]["endpoints"][0].update(honourLabels=True)),
    ("kserve", "a misspelt InferenceService field", lambda rs: _model("nnserve")(rs).update(protocolVersoin="v2")),
    ("kserve", "a scale metric KServe lacks",
     lambda rs: one(rs, "InferenceService", "nnserve")["spec"]["predictor"].update(scaleMetric="latency")),
    ("kserve", "a runtime field KServe lacks", lambda rs: one(rs, "ServingRuntime")["spec"].update(protocols=["v2"])),
    ("kserve", "a bad label on a custom resource",
     lambda rs: one(rs, "ServingRuntime")["metadata"]["labels"].update({"app.kubernetes.io/name": ["nnserve"]})),
]  # fmt: skip


@pytest.mark.parametrize(("name", "what", "mutate"), SCHEMA_BREACHES, ids=[b[1] for b in SCHEMA_BREACHES])
def test_the_strict_schemas_reject_what_the_api_server_would(rendered, name, what, mutate):
    broken = copy.deepcopy(rendered[name])
    mutate(broken)
    assert [e for r in broken for e in schema_errors(r)] != []


def test_the_sdk_reading_rejects_an_unknown_field(rendered):
    broken = copy.deepcopy(one(rendered["kserve"], "InferenceService", "nnserve"))
    broken["spec"]["predictor"]["model"]["protocolVersoin"] = "v2"
    assert sdk_errors(broken) == [
        "InferenceService.spec.predictor.model.protocolVersoin: not a field of V1beta1ModelSpec"
    ]


# ---- the volume overlay's Deployment, run as rendered -------------------------------------------------------------


def versioned_repository(root: Path) -> list[str]:
    """The shipped models as the volume holds them: <name>/1/ (links to artifacts/<name>/'s files, figures left)."""
    names = []
    for folder in sorted(p.parent for p in (REPO / "artifacts").glob("*/model.json")):
        (root / folder.name / "1").mkdir(parents=True)
        for f in folder.iterdir():
            if f.suffix != ".png":
                (root / folder.name / "1" / f.name).symlink_to(f)
        names.append(folder.name)
    return names


@pytest.mark.slow
@pytest.mark.server
def test_the_volume_overlay_runs_as_rendered(rendered, tmp_path):
    resources = rendered["volume"]
    c, deployment = container(resources), one(resources, "Deployment")
    settings = settings_of({k: v for k, v in one(resources, "ConfigMap")["data"].items()})
    models, key = tmp_path / "claim", "k8s-test-key"
    names = versioned_repository(models)
    pod = Pod(deployment, resources, {"nnserve-models": models}, {"nnserve-api-key/api-key": key}, tmp_path)
    auth = {"Authorization": f"Bearer {key}"}
    pod.start()
    try:
        # the probes: startup within its budget, then ready; each on an open route of the route table
        startup = c["startupProbe"]
        budget = startup.get("initialDelaySeconds", 0) + startup["periodSeconds"] * startup["failureThreshold"]
        started = pod.wait_for(pod.probe_url("startupProbe"), budget)
        ready = started + pod.wait_for(pod.probe_url("readinessProbe"), 30)
        assert httpx.get(pod.probe_url("livenessProbe")).status_code == 200
        if isolated():  # as in the pod: bentoml is PID 1; the image's files and the claim are read-only
            ns_pid, read_only = pod.confinement()
            assert ns_pid == 1 and {str(REPO), str(models)} <= read_only, (ns_pid, read_only)
        routes = set(httpx.get(pod.url + "/docs.json").json()["paths"])
        assert {c[p]["httpGet"]["path"] for p in PROBES} <= routes
        # the Secret's variable is the key the service reads; the volume's models are the ones served
        assert httpx.get(pod.url + "/v1/models").status_code == 401
        cards = httpx.get(pod.url + "/v1/models", headers=auth).json()["models"]
        assert sorted(m["name"] for m in cards) == names
        rss = pod.rss_mib()
        assert rss * 2**20 < quantity(c["resources"]["requests"]["memory"]), f"{rss:.0f} MiB resident"
        # the same model.onnx through /v2 as Triton would run it: the graph's own tensors, onnxruntime's answer
        import onnxruntime as ort

        graph = models / "mnist-cnn" / "1" / "model.onnx"
        session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
        (inp,) = session.get_inputs()
        body = {"inputs": [{"name": inp.name, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
        r = httpx.post(pod.url + "/v2/models/mnist-cnn/infer", json=body, headers=auth)
        assert r.status_code == 200, r.text
        served = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in r.json()["outputs"]}
        want = dict(zip([o.name for o in session.get_outputs()], session.run(None, {inp.name: x}), strict=True))
        np.testing.assert_allclose(served["logits"], want["logits"], rtol=1e-4, atol=1e-5)
        # the adapter's series: on /metrics, labelled with the route its query selects (hence honorLabels)
        from prometheus_client.parser import text_string_to_metric_families

        (rule,) = adapter_rules()
        series = re.match(r"(\w+)\{", rule["seriesQuery"])[1]  # type: ignore[index]
        routes_re = re.search(r'endpoint=~"([^"]+)"', rule["metricsQuery"])[1]  # type: ignore[index]
        families = {f.name: f for f in text_string_to_metric_families(httpx.get(pod.url + "/metrics").text)}
        labels = [s.labels for s in families[series].samples]
        assert any(re.fullmatch(routes_re, s["endpoint"]) and s["service_name"] == "nnserve" for s in labels), labels
        swapped = swap_a_version(pod, models, auth, settings.repository_poll_s)
        # SIGTERM to PID 1, as the kubelet sends it: not ready at once, still serving during the drain, then gone
        t0 = time.monotonic()
        pod.terminate()
        not_ready = pod.wait_for_status(pod.probe_url("readinessProbe"), 503, 5)
        assert httpx.get(pod.url + "/v1/models", headers=auth).status_code == 200  # within the drain
        code = pod.wait_exit(deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])
        stopped = time.monotonic() - t0
        assert code == 0, pod.log()
        assert stopped >= settings.drain_s - 0.5
    finally:
        pod.kill()
    print(
        f"\n{'PID 1, read-only root' if isolated() else 'a plain process'}: started in {started:.1f} s (budget "
        f"{budget} s), ready in {ready:.1f} s, {rss:.0f} MiB resident with {len(names)} models; version 2 served "
        f"{swapped:.1f} s after it was written, no request failed; SIGTERM: not ready after {not_ready:.2f} s, "
        f"exited after {stopped:.1f} s (drain {settings.drain_s:g} s)"
    )


def swap_a_version(pod: Pod, models: Path, auth: dict[str, str], poll_s: float) -> float:
    """Writes mnist-cnn version 2 into the volume and sends requests until the pod serves it (poll model control);
    returns the seconds it took. Every request must succeed."""
    v2 = models / "mnist-cnn" / ".2.partial"  # renamed into place when whole: never read half-written
    v2.mkdir()
    for f in (models / "mnist-cnn" / "1").iterdir():
        if f.name != "model.json":
            (v2 / f.name).symlink_to(f.resolve())
    meta = json.loads((models / "mnist-cnn" / "1" / "model.json").read_text())
    (v2 / "model.json").write_text(json.dumps({**meta, "version": "2"}))
    v2.rename(v2.with_name("2"))
    failures, stop = [], threading.Event()

    def traffic() -> None:
        body = {"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.5] * 784}]}
        with httpx.Client(base_url=pod.url, headers=auth, timeout=10) as client:
            while not stop.is_set():
                r = client.post("/v2/models/mnist-cnn/infer", json=body)
                if r.status_code != 200:
                    failures.append(r.status_code)

    sender = threading.Thread(target=traffic)
    t0 = time.monotonic()
    sender.start()
    try:
        while time.monotonic() - t0 < 3 * poll_s + 20:
            r = httpx.get(pod.url + "/v2/models/mnist-cnn", headers=auth)
            assert r.status_code == 200, f"metadata during the swap: {r.status_code} {r.text}\n{pod.log()}"
            if r.json()["versions"] == ["2"]:
                break
            time.sleep(0.2)
        took = time.monotonic() - t0
    finally:
        stop.set()
        sender.join()
    assert took < 3 * poll_s + 20, f"version 2 not served:\n{pod.log()}"
    assert failures == []
    return took
