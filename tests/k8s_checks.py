"""What tests/test_k8s.py checks in deploy/k8s: kustomize renders it, every resource passes a strict schema, and the
house rules hold (``violations``).

Schemas: Kubernetes 1.30's, bundled offline with kubernetes-validate (its ``-strict`` set: no unknown field); for
the custom resources, the CRDs' own openAPIV3Schema, vendored unchanged in deploy/k8s/schemas (KServe v0.20.0, the
Prometheus Operator v0.93.0; deploy/k8s/README.md), made strict the way the API server's strict field validation
is (an unknown field is an error, except where the CRD preserves unknown fields); KServe's Python SDK models in
.venv (0.21) are a second reading of the KServe resources.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from pydantic import SecretStr, ValidationError

from service import __version__
from service.auth import OPEN_PATHS
from service.middleware import sheddable
from service.settings import Settings

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "deploy" / "k8s"
SCHEMAS = K8S / "schemas"
OVERLAYS = ("baked", "volume", "inflight-hpa")
K8S_VERSION = "1.30.0"
STANDARD_LABELS = tuple(
    f"app.kubernetes.io/{k}" for k in ("name", "instance", "component", "part-of", "version", "managed-by")
)
CRDS = {  # (apiVersion, kind) -> vendored CRD file
    ("serving.kserve.io/v1beta1", "InferenceService"): "serving.kserve.io_inferenceservices.yaml",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "serving.kserve.io_servingruntimes.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
}
BACKSTOP_S = 5  # BentoML's traffic timeout is the request timeout + 5 s (service/service.py)
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
Resource = dict[str, Any]


# ---- rendering ----------------------------------------------------------------------------------------------------


@functools.cache
def renderer() -> list[str] | None:
    """``kubectl kustomize`` (kustomize v5 inside kubectl >= 1.27), else a standalone ``kustomize build``."""
    if kubectl := shutil.which("kubectl"):
        out = subprocess.run([kubectl, "version", "--client", "-o", "yaml"], capture_output=True, text=True)
        version = (yaml.safe_load(out.stdout or "{}") or {}).get("kustomizeVersion", "")
        if re.match(r"v(\d+)", version) and int(version[1:].split(".")[0]) >= 5:
            return [kubectl, "kustomize"]
    if kustomize := shutil.which("kustomize"):
        return [kustomize, "build"]
    return None


def render(path: Path) -> list[Resource]:
    cmd = renderer()
    assert cmd is not None
    out = subprocess.run([*cmd, str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"{shlex.join([*cmd, str(path)])} failed:\n{out.stderr}"
    return [r for r in yaml.safe_load_all(out.stdout) if r]


# ---- schemas ------------------------------------------------------------------------------------------------------


def strict_schema(node: Any) -> Any:
    """A structural schema with ``additionalProperties: false`` on every object that lists its properties and
    neither allows more nor preserves unknown fields (what the API server's strict field validation rejects)."""
    if isinstance(node, list):
        return [strict_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = dict(node)
    if isinstance(node.get("properties"), dict):
        out["properties"] = {k: strict_schema(v) for k, v in node["properties"].items()}
        if "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            out[key] = strict_schema(node[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in node:
            out[key] = strict_schema(node[key])
    return out


@functools.cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Draft4Validator:
    crd = yaml.load(
        (SCHEMAS / CRDS[api_version, kind]).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    )
    group, version = api_version.split("/")
    assert crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == kind
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return jsonschema.Draft4Validator(strict_schema(served["schema"]["openAPIV3Schema"]))


def schema_errors(resource: Resource) -> list[str]:
    """Every way ``resource`` breaks its schema (empty: valid)."""
    key = (resource.get("apiVersion", ""), resource.get("kind", ""))
    where = f"{key[1]}/{resource.get('metadata', {}).get('name')}"
    if key in CRDS:
        errors = [f"{where}: {e.message} at {list(e.absolute_path)}" for e in crd_validator(*key).iter_errors(resource)]
        # a CRD's schema says only "metadata: object"; its metadata is an ObjectMeta, checked as a ConfigMap's
        return errors + schema_errors({"apiVersion": "v1", "kind": "ConfigMap", "metadata": resource["metadata"]})
    try:
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{where}: {e.message} at {list(e.absolute_path)}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"{where}: {e.message}"]
    return []


def sdk_errors(*resources: Resource) -> list[str]:
    """KServe resources read through KServe's Python SDK models: every field must be one of the model's. Read in a
    process of its own: kserve registers the protocol's protobuf messages under the names tritonclient.grpc uses,
    so the two cannot be imported into one process (tests/test_kserve_client.py, and the full suite imports both)."""
    code = (
        "import json, sys; from tests.k8s_checks import _sdk_errors; "
        "print(json.dumps([e for r in json.load(sys.stdin) for e in _sdk_errors(r)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(resources),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=True,
    )
    errors: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return errors


def _sdk_errors(resource: Resource) -> list[str]:
    import kserve.models

    cls = {"InferenceService": "V1beta1InferenceService", "ServingRuntime": "V1alpha1ServingRuntime"}[resource["kind"]]
    assert hasattr(kserve.models, cls)
    return list(_walk(resource, cls, resource["kind"]))


def _walk(value: Any, type_name: str, where: str) -> Iterator[str]:
    import kserve.models
    import kubernetes.client.models

    if m := re.fullmatch(r"(?:list|List)\[(.+)\]", type_name):
        if not isinstance(value, list):
            yield f"{where}: not a list"
            return
        for i, v in enumerate(value):
            yield from _walk(v, m[1], f"{where}[{i}]")
        return
    if m := re.fullmatch(r"(?:dict\(str, (.+)\)|Dict\[str, (.+)\])", type_name):
        if not isinstance(value, dict):
            yield f"{where}: not a map"
            return
        for k, v in value.items():
            yield from _walk(v, m[1] or m[2], f"{where}.{k}")
        return
    primitive: dict[str, type | tuple[type, ...]] = {
        "str": str, "int": int, "bool": bool, "float": (int, float), "object": object
    }  # fmt: skip
    if type_name in primitive:
        if not isinstance(value, primitive[type_name]) or (type_name == "int" and isinstance(value, bool)):
            yield f"{where}: not a {type_name}"
        return
    cls = getattr(kserve.models, type_name, None) or getattr(kubernetes.client.models, type_name, None)
    if cls is None or not isinstance(value, dict):
        yield f"{where}: {type_name} unknown to the SDK or not an object"
        return
    fields = {json_name: attr for attr, json_name in cls.attribute_map.items()}
    for k, v in value.items():
        if k not in fields:
            yield f"{where}.{k}: not a field of {type_name}"
        else:
            yield from _walk(v, cls.openapi_types[fields[k]], f"{where}.{k}")


# ---- the house rules ----------------------------------------------------------------------------------------------


def quantity(q: str | int) -> float:
    """A Kubernetes quantity ("2", "500m", "1Gi", "512M") as a number."""
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(m|k|M|G|Ki|Mi|Gi)?", str(q))
    assert m, f"not a quantity: {q!r}"
    return float(m[1]) * units.get(m[2] or "", 1)


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    saved = {k: v for k, v in os.environ.items() if k.startswith("NNSERVE_")}
    for k in saved:
        del os.environ[k]
    os.environ.update(env)
    try:
        yield
    finally:
        for k in env:
            os.environ.pop(k, None)
        os.environ.update(saved)


def settings_of(env: dict[str, str]) -> Settings:
    """The Settings a container with these NNSERVE_* variables builds (raises on a bad value)."""
    with environment({k: v for k, v in env.items() if k.startswith("NNSERVE_")}):
        return Settings()


def secret_settings() -> set[str]:
    """The variables of the SecretStr settings (the API key)."""
    prefix = Settings.model_config["env_prefix"]
    return {prefix + n.upper() for n, f in Settings.model_fields.items() if SecretStr in (f.annotation, *_args(f))}


def _args(field: Any) -> tuple[Any, ...]:
    return getattr(field.annotation, "__args__", ())


def container_env(container: Resource, resources: list[Resource]) -> dict[str, str]:
    """The container's variables: its ConfigMaps' keys, then its env (a secret's as ``secret:<name>/<key>``)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        found = [r for r in resources if r["kind"] == "ConfigMap" and r["metadata"]["name"] == name]
        env.update(found[0]["data"] if found else {f"missing ConfigMap {name}": ""})
    for var in container.get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        env[var["name"]] = f"secret:{ref['name']}/{ref['key']}" if ref else var.get("value", "")
    return env


def server_container(c: Resource, resources: list[Resource], where: str, uid: int) -> list[str]:
    """The rules for a container that runs nnserve (a Deployment's, a ServingRuntime's)."""
    out: list[str] = []
    env = container_env(c, resources)
    out += [f"{where}: {k}" for k in env if k.startswith("missing ")]
    nnserve = {k: v for k, v in env.items() if k.startswith("NNSERVE_") and not v.startswith("secret:")}
    known = {Settings.model_config["env_prefix"] + n.upper() for n in Settings.model_fields}
    out += [f"{where}: {k} is not a setting of service/settings.py" for k in nnserve if k not in known]
    try:
        settings = settings_of({k: v for k, v in nnserve.items() if k in known})
    except ValidationError as e:
        return [*out, f"{where}: settings rejected: {e}"]
    secrets = {k for k, v in env.items() if v.startswith("secret:")}
    if secrets != secret_settings():
        out.append(f"{where}: secrets {sorted(secrets)}, the service reads its key from {sorted(secret_settings())}")
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    http = int(env.get("BENTOML_PORT", "-1"))
    if http not in ports.values():
        out.append(f"{where}: BENTOML_PORT {http} is not a containerPort")
    if "grpc" in ports and ports["grpc"] != settings.grpc_port:
        out.append(f"{where}: grpc port {ports['grpc']} but NNSERVE_GRPC_PORT {settings.grpc_port}")
    for probe in PROBES:
        get = c.get(probe, {}).get("httpGet")
        if get is None:
            out.append(f"{where}: no {probe} (httpGet)")
            continue
        if get["path"] not in OPEN_PATHS or sheddable(get["path"]):
            out.append(f"{where}: {probe} {get['path']} needs the API key or an admission slot")
        if ports.get(get["port"], get["port"]) != http:
            out.append(f"{where}: {probe} port {get['port']} is not the HTTP listener {http}")
    res = c.get("resources", {})
    for kind in ("cpu", "memory"):
        req, lim = res.get("requests", {}).get(kind), res.get("limits", {}).get(kind)
        if req is None or lim is None:
            out.append(f"{where}: no {kind} request and limit")
        elif quantity(req) > quantity(lim):
            out.append(f"{where}: {kind} request {req} over its limit {lim}")
    if not c.get("image", "").endswith(f":{__version__}"):
        out.append(f"{where}: image {c.get('image')} is not tagged {__version__}")
    if c.get("securityContext", {}).get("runAsUser", uid) != uid:
        out.append(f"{where}: runs as another user than the image's {uid}")
    return out


def labels(resource: Resource, where: str) -> list[str]:
    have = resource.get("metadata", {}).get("labels", {})
    out = [f"{where}: no label {k}" for k in STANDARD_LABELS if k not in have]
    if have.get("app.kubernetes.io/version", __version__) != __version__:
        out.append(f"{where}: app.kubernetes.io/version is not {__version__}")
    return out


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def violations(resources: list[Resource], uid: int, adapter_metrics: frozenset[str] = frozenset()) -> list[str]:
    """Every house rule ``resources`` (one rendered kustomization) breaks; ``uid``: the image's user;
    ``adapter_metrics``: the custom metrics the Prometheus adapter's rules serve."""
    kinds: dict[str, list[Resource]] = {}
    for r in resources:
        kinds.setdefault(r["kind"], []).append(r)
    out = [e for r in resources for e in labels(r, f"{r['kind']}/{r['metadata']['name']}")]
    services, claims = kinds.get("Service", []), {r["metadata"]["name"] for r in kinds.get("PersistentVolumeClaim", [])}
    for d in kinds.get("Deployment", []):
        pod, where = d["spec"]["template"], f"Deployment/{d['metadata']['name']}"
        out += labels(pod, f"{where} pod template")
        if not selects(d["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"]):
            out.append(f"{where}: its selector does not select its pods")
        if d["spec"].get("strategy", {}).get("rollingUpdate", {}).get("maxUnavailable") != 0:
            out.append(f"{where}: a rollout may take serving pods away (maxUnavailable is not 0)")
        for c in pod["spec"]["containers"]:
            out += server_container(c, resources, f"{where} container {c['name']}", uid)
            with contextlib.suppress(ValidationError):  # a bad setting: server_container said so
                st = settings_of({k: v for k, v in container_env(c, resources).items() if k.startswith("NNSERVE_")})
                need = st.drain_s + st.request_timeout_s + BACKSTOP_S
                if pod["spec"].get("terminationGracePeriodSeconds", 30) <= need:
                    out.append(f"{where}: terminationGracePeriodSeconds not over drain + timeout + backstop ({need} s)")
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
            out += [f"{where}: mount {m} has no volume" for m in mounts - set(volumes)]
            for v in volumes.values():
                if "persistentVolumeClaim" in v and v["persistentVolumeClaim"]["claimName"] not in claims:
                    out.append(f"{where}: claim {v['persistentVolumeClaim']['claimName']} is not in the set")
        for s in services:
            if not selects(s["spec"]["selector"], pod["metadata"]["labels"]):
                out.append(f"Service/{s['metadata']['name']}: selects no pod of {where}")
    for hpa in kinds.get("HorizontalPodAutoscaler", []):
        if hpa["spec"].get("minReplicas", 1) < 2:
            out.append("HorizontalPodAutoscaler: fewer than 2 replicas (one drain takes the service down)")
        for m in hpa["spec"]["metrics"]:
            if m["type"] == "Pods" and m["pods"]["metric"]["name"] not in adapter_metrics:
                out.append(f"HorizontalPodAutoscaler: no adapter rule serves {m['pods']['metric']['name']}")
        for pdb in kinds.get("PodDisruptionBudget", []):
            if pdb["spec"].get("maxUnavailable", 0) >= hpa["spec"].get("minReplicas", 1):
                out.append("PodDisruptionBudget: may evict every pod of the smallest deployment")
    for sm in kinds.get("ServiceMonitor", []):
        ports = {p["name"] for s in services if selects(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
                 for p in s["spec"]["ports"]}  # fmt: skip
        for ep in sm["spec"]["endpoints"]:
            if ep.get("port") not in ports or ep.get("path") != "/metrics":
                out.append(f"ServiceMonitor: endpoint {ep.get('port')} {ep.get('path')} is no Service's /metrics")
            if not ep.get("honorLabels"):
                out.append("ServiceMonitor: without honorLabels the route label becomes exported_endpoint")
    out += _kserve(kinds, resources, claims, uid)
    return out


def _kserve(kinds: dict[str, list[Resource]], resources: list[Resource], claims: set[str], uid: int) -> list[str]:
    out: list[str] = []
    runtimes = {r["metadata"]["name"]: r["spec"] for r in kinds.get("ServingRuntime", [])}
    for name, spec in runtimes.items():
        for c in spec["containers"]:
            out += server_container(c, resources, f"ServingRuntime/{name} container {c['name']}", uid)
    for isvc in kinds.get("InferenceService", []):
        where, model = f"InferenceService/{isvc['metadata']['name']}", isvc["spec"]["predictor"]["model"]
        if model.get("protocolVersion") != "v2":
            out.append(f"{where}: not the Open Inference Protocol v2")
        uri = model.get("storageUri", "")
        if not uri.startswith("pvc://") or uri[6:].split("/")[0] not in claims:
            out.append(f"{where}: storageUri {uri!r} names no claim of the set")
        if (runtime := model.get("runtime")) is not None:
            spec = runtimes.get(runtime)
            formats = {f["name"] for f in spec["supportedModelFormats"]} if spec else set()
            if model["modelFormat"]["name"] not in formats or "v2" not in (spec or {}).get("protocolVersions", []):
                out.append(f"{where}: runtime {runtime} is absent or serves not {model['modelFormat']['name']} on v2")
            timeout = settings_of({}).request_timeout_s + BACKSTOP_S
            if isvc["spec"]["predictor"].get("timeout", 0) < timeout:
                out.append(f"{where}: predictor timeout under the request timeout + backstop ({timeout} s)")
        elif not {"cpu", "memory"} <= set(model.get("resources", {}).get("limits", {})):
            out.append(f"{where}: no cpu and memory limits")
    return out
