"""Static checks of the deployment files: Dockerfile, .dockerignore, docker-compose.yml and deploy/.

No Docker daemon and no network: the compose file is validated against the Compose Specification schema vendored
at deploy/compose-spec.json (see deploy/README.md for its provenance), every PromQL expression of the alerts and
the dashboard may name only series that the service really exports, and promtool / docker-compose checks run
when those tools are installed (skipped otherwise, with the reason).
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from service import metrics as service_metrics
from service.errors import STATUS
from service.settings import Settings

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS_YML = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST_YML = DEPLOY / "prometheus" / "alerts_test.yml"
DATASOURCE_YML = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARDS_YML = DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yml"
DASHBOARD_JSON = DEPLOY / "grafana" / "dashboards" / "nnserve.json"

# BentoML 1.4's own series, as a running `bentoml serve service.service:NNServe` exposes them on /metrics (new-style
# services, namespace services.metrics.namespace = "bentoml_service"): name -> (type, label names). Confirmed
# against a live /metrics and the docs' "Default metrics" table. test_bentoml_series_exist_in_installed_bentoml ties
# the names to the installed BentoML, so an upgrade that renames them fails here.
BENTOML_SERIES: dict[str, tuple[str, frozenset[str]]] = {
    "bentoml_service_request_total": (
        "counter",
        frozenset({"endpoint", "http_response_code", "runner_name", "service_name", "service_version"}),
    ),
    "bentoml_service_request_duration_seconds": (
        "histogram",
        frozenset({"endpoint", "http_response_code", "runner_name", "service_name", "service_version"}),
    ),
    "bentoml_service_request_in_progress": (
        "gauge",
        frozenset({"endpoint", "runner_name", "service_name", "service_version"}),
    ),
    "bentoml_service_adaptive_batch_size": (
        "histogram",
        frozenset({"method_name", "runner_name", "service_name", "service_version", "worker_index"}),
    ),
    "bentoml_service_last_request_timestamp_seconds": (
        "gauge",
        frozenset({"runner_name", "service_name", "service_version"}),
    ),
}
# made by Prometheus itself for every target, with the target labels job and instance
PROMETHEUS_SERIES = {"up": ("gauge", frozenset())}
TARGET_LABELS = frozenset({"job", "instance"})

PROMQL_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "atan2", "offset"}
    | {"inf", "nan", "Inf", "NaN"}
)
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
MATCHER = re.compile(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


# ---- helpers --------------------------------------------------------------------------------------------------------


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def interpolate(value, env: dict[str, str] | None = None):
    """Compose's ${VAR}, ${VAR-default} and ${VAR:-default} against ``env`` (empty: every default applies)."""
    env = env or {}

    def sub(m: re.Match) -> str:
        name, op, default = m.group(1), m.group(2), m.group(3) or ""
        if op == ":-":
            return env.get(name) or default
        return env.get(name, default if op == "-" else "")

    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, str):
        return re.sub(r"\$\{(\w+)(:?-)?([^}]*)\}", sub, value)
    return value


def seconds(duration: str) -> float:
    """A compose duration ("45s", "1m30s", "500ms") in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def exported_series() -> dict[str, tuple[str, frozenset[str]]]:
    """Every series name on /metrics -> (type, label names): nnserve's collectors, BentoML's, Prometheus' own."""
    found: dict[str, tuple[str, frozenset[str]]] = {}
    for obj in vars(service_metrics).values():
        if isinstance(obj, MetricWrapperBase):
            (family,) = obj.describe()
            found[family.name] = (family.type, frozenset(obj._labelnames))
    assert found, "service.metrics defines no prometheus_client collectors"
    found |= BENTOML_SERIES | PROMETHEUS_SERIES
    suffixes = {
        "counter": ["_total"],
        "histogram": ["_bucket", "_sum", "_count"],
        "gauge": [""],
        "summary": ["_sum", "_count", ""],
    }
    series = {}
    for name, (kind, labels) in found.items():
        base = name.removesuffix("_total") if kind == "counter" else name
        for suffix in suffixes[kind]:
            series[base + suffix] = (kind, labels | TARGET_LABELS | ({"le"} if suffix == "_bucket" else set()))
    return series


def strip_promql(expr: str) -> str:
    """The expression without strings, label matchers, ranges, grouping clauses and Grafana variables."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", "{}", e)
    e = re.sub(r"\[[^\]]*\]", "[]", e)
    e = GROUPING.sub(" ", e)
    return re.sub(r"\$\{?\w+\}?", " ", e)


def metric_names(expr: str) -> set[str]:
    """Identifiers that stand for a series: not a function or aggregation (followed by "("), keyword or number."""
    e = strip_promql(expr)
    names = set()
    for m in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)", e):
        rest = e[m.end() :].lstrip()
        if rest.startswith("(") or m.group(1) in PROMQL_KEYWORDS:
            continue
        names.add(m.group(1))
    return names


def label_names(expr: str) -> set[str]:
    """Label names in matchers and in by / without / on / ignoring / group_* clauses."""
    found = {m.group(1) for m in MATCHER.finditer(expr)}
    for m in GROUPING.finditer(re.sub(r"\{[^}]*\}", "{}", expr)):
        found |= {name.strip() for name in m.group(2).split(",") if name.strip()}
    return found


def alert_exprs() -> list[tuple[str, str]]:
    rules = [r for g in load_yaml(ALERTS_YML)["groups"] for r in g["rules"]]
    return [(r.get("alert") or r["record"], r["expr"]) for r in rules]


def dashboard() -> dict:
    return json.loads(DASHBOARD_JSON.read_text())


def dashboard_panels(d: dict) -> list[dict]:
    out = []
    for p in d["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # panels folded in a row
    return out


def dashboard_exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard_panels(dashboard()) for t in p.get("targets", [])]


def all_exprs() -> list[tuple[str, str]]:
    return [(f"alert {n}", e) for n, e in alert_exprs()] + [(f"panel {n}", e) for n, e in dashboard_exprs()]


def dockerfile(path: Path = REPO / "Dockerfile") -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(
        r"\\\n",
        " ",
        "\n".join(ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")),
    )
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1].strip()) for ln in text.splitlines() if ln.strip()]


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule, simplified: the last pattern matching the path or one of its parents wins."""
    parts = path.split("/")
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        if any(fnmatch.fnmatchcase("/".join(parts[:i]), pattern.rstrip("/")) for i in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def first_party_closure(roots: list[Path]) -> set[Path]:
    """Every repository module that importing ``roots`` executes (imports at any depth, package __init__s too)."""
    packages = {p.name for p in REPO.iterdir() if (p / "__init__.py").is_file()}
    seen: set[Path] = set()
    todo = list(roots)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                parts = name.split(".")
                if parts[0] not in packages:
                    continue
                for i in range(1, len(parts) + 1):
                    base = REPO.joinpath(*parts[:i])
                    for candidate in (base / "__init__.py", base.with_suffix(".py")):
                        if candidate.is_file():
                            todo.append(candidate)
    return seen


def promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is not on PATH (Debian: apt-get install prometheus; or a Prometheus release tarball)")
    return tool


def run_tool(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(REPO / "docker-compose.yml")


# ---- docker-compose.yml -------------------------------------------------------------------------------------------


def test_compose_validates_against_the_compose_specification(compose):
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is a dev dependency")
    schema = json.loads((DEPLOY / "compose-spec.json").read_text())
    assert schema["title"] == "Compose Specification"
    # docker-compose 1.29 validates this very schema with a draft-4 validator; do the same
    jsonschema.Draft4Validator.check_schema(schema)
    validator = jsonschema.Draft4Validator(schema)
    for env in ({}, {"API_HOST_PORT": ""}):
        errors = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(interpolate(compose, env))
        ]
        assert not errors, errors
    assert "version" not in compose  # see the comment at the top of docker-compose.yml


def test_compose_schema_check_rejects_a_broken_file(compose):
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is a dev dependency")
    validator = jsonschema.Draft4Validator(json.loads((DEPLOY / "compose-spec.json").read_text()))
    broken = interpolate(compose)
    broken["services"]["api"]["healthcheck"]["intervall"] = "10s"
    broken["services"]["api"]["stop_grace_period"] = 45
    assert len(list(validator.iter_errors(broken))) == 2


def test_compose_api_service(compose):
    api = interpolate(compose)["services"]["api"]
    assert api["build"] == "." and api["image"] == "nnserve:latest"
    test = api["healthcheck"]["test"]
    assert test[0] == "CMD" and "/readyz" in " ".join(test)
    # a stop must outlast the drain period and then the longest request: the service's timeout plus BentoML's
    # traffic backstop of +5 s (service/service.py: traffic={"timeout": S.request_timeout_s + 5})
    env = api["environment"]
    timeout = int(env.get("NNSERVE_REQUEST_TIMEOUT_S", Settings.model_fields["request_timeout_s"].default))
    drain = float(env.get("NNSERVE_DRAIN_S", Settings.model_fields["drain_s"].default))
    assert seconds(api["stop_grace_period"]) > drain + timeout + 5
    limits = api["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) > 0 and limits["memory"]


def test_compose_services_are_complete(compose):
    services = interpolate(compose)["services"]
    assert set(services) == {"api", "prometheus", "grafana", "locust-master", "locust-worker"}
    for name, svc in services.items():
        assert svc.get("restart"), f"{name}: no restart policy"
        limits = svc["deploy"]["resources"]["limits"]
        assert limits.get("cpus") and limits.get("memory"), f"{name}: no cpu/memory limits"
        for dep, cond in svc.get("depends_on", {}).items():
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy, which has no healthcheck"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert services["locust-master"]["depends_on"]["api"]["condition"] == "service_healthy"
    for name in ("locust-master", "locust-worker"):
        svc = services[name]
        assert svc["profiles"] == ["loadtest"] and "./loadtest:/mnt/locust:ro" in svc["volumes"]
        assert "/mnt/locust/locustfile.py" in svc["command"]
    assert "http://api:3000" in services["locust-master"]["command"]


def test_loadtest_image_has_what_the_locustfile_imports(compose):
    build = compose["services"]["locust-master"]["build"]
    assert compose["services"]["locust-worker"]["build"] == build
    steps = dockerfile(REPO / build["context"] / build["dockerfile"])
    assert all(args.split()[0].startswith("locustio/locust:") for op, args in steps if op == "FROM")
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for op, a in steps if op == "ARG" and "=" in a}
    assert args.get("PIP_CERT") == "" and args.get("PIP_INDEX_URL") == ""
    locustfile = REPO / "loadtest" / "locustfile.py"
    if not locustfile.is_file():
        pytest.skip("loadtest/locustfile.py is not there yet")
    installed = " ".join(a for op, a in steps if op == "RUN").lower()
    # locust's own dependencies come with the image; the rest must be installed by deploy/locust/Dockerfile
    with_locust = {"locust", "requests", "urllib3", "gevent", "geventhttpclient", "flask", "msgpack", "zmq", "psutil"}
    pip_name = {"PIL": "pillow", "yaml": "pyyaml"}
    local = {p.stem for p in locustfile.parent.glob("*.py")} | {"loadtest"}
    for node in ast.walk(ast.parse(locustfile.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for top in {n.split(".")[0] for n in names}:
            if top in sys.stdlib_module_names or top in with_locust or top in local:
                continue
            assert f'"{pip_name.get(top, top).lower()}' in installed, f"the load-test image lacks {top}"


@pytest.mark.parametrize(
    ("env", "published"),
    [
        ({}, ["127.0.0.1:3000:3000", "127.0.0.1:8001:8001"]),
        ({"API_HOST_PORT": "", "API_GRPC_HOST_PORT": ""}, ["127.0.0.1::3000", "127.0.0.1::8001"]),
        ({"API_HOST_PORT": "8080", "API_GRPC_HOST_PORT": "9001"}, ["127.0.0.1:8080:3000", "127.0.0.1:9001:8001"]),
    ],
    ids=["default", "scaled", "other-port"],
)
def test_compose_ports_bind_loopback_only(compose, env, published):
    services = interpolate(compose, env)["services"]
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name} publishes {port!r} beyond loopback"
    assert services["api"]["ports"] == published  # HTTP and gRPC


def test_compose_mounts_exist(compose):
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name} mounts {source}, which does not exist"
    grafana = compose["services"]["grafana"]
    provider = load_yaml(DASHBOARDS_YML)["providers"][0]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in grafana["volumes"]


def test_docker_compose_accepts_the_file():
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not on PATH (Debian's docker-compose package is 1.29)")
    env = {k: v for k, v in os.environ.items() if k != "API_HOST_PORT"}
    run_tool(tool, "--profile", "loadtest", "config", "-q", env=env)
    if run_tool(tool, "version", "--short").strip().startswith("1."):  # v2 prints ports in the long syntax
        assert "127.0.0.1::3000" in run_tool(tool, "config", env={**env, "API_HOST_PORT": ""})


# ---- Dockerfile and .dockerignore ---------------------------------------------------------------------------------


def test_dockerfile_serving_image():
    steps = dockerfile()
    froms = [args for op, args in steps if op == "FROM"]
    assert froms and all(f.split()[0] == "python:3.11-slim" for f in froms)
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]
    ops = {op for op, _ in final}
    user = [args for op, args in final if op == "USER"]
    assert user and user[-1] not in {"root", "0"}
    assert any(op == "EXPOSE" and args.split() == ["3000", "8001"] for op, args in final)  # HTTP, gRPC
    assert any(op == "HEALTHCHECK" and "/readyz" in args and "urllib" in args for op, args in final)
    assert any(op == "COPY" and args.split()[0] == "artifacts/" for op, args in final)
    env = " ".join(args for op, args in final if op == "ENV")
    assert "NNSERVE_MODEL_DIR=/app/artifacts" in env and "BENTOML_DO_NOT_TRACK=True" in env
    assert {"CMD", "HEALTHCHECK"} <= ops
    # the package-index build args exist, are empty by default, and stay in the build stage
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for op, a in steps if op == "ARG" and "=" in a}
    assert args.get("PIP_CERT") == "" and args.get("PIP_INDEX_URL") == ""
    assert not any(op == "ARG" for op, _ in final)


def test_image_carries_what_the_service_imports_and_no_torch():
    modules = first_party_closure(sorted((REPO / "service").rglob("*.py")))
    needed = {m.relative_to(REPO).parts[0] for m in modules}
    copied = {args.split()[0].rstrip("/") for op, args in dockerfile() if op == "COPY" and not args.startswith("--")}
    assert needed <= copied, f"the service imports {sorted(needed - copied)}, which the image does not COPY"
    for module in modules:
        for node in ast.walk(ast.parse(module.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] == "torch" for n in names), f"{module} imports torch"
    patterns = dockerignore_patterns()
    for module in modules:
        assert not dockerignored(module.relative_to(REPO).as_posix(), patterns), f".dockerignore drops {module}"


def test_dockerignore():
    patterns = dockerignore_patterns()
    kept = [
        "pyproject.toml",
        "service/service.py",
        "contract/",
        "artifacts/mnist-cnn/model.onnx",
        "artifacts/mnist-cnn/model.json",
        "artifacts/imdb-lstm/vocab.json",
        "artifacts/mnist-cnn/curves.png",  # the figures the model cards serve
        "deploy/ca.crt",
    ]
    dropped = [
        ".venv/bin/python",
        "runs/mnist-cnn/checkpoint.pt",
        ".git/HEAD",
        "data/mnist/train.npz",
        "tests/test_models.py",
        ".pytest_cache/v/cache",
        ".mypy_cache/3.11",
        ".ruff_cache/x",
        "service/__pycache__/service.cpython-311.pyc",
        "training/image_classification.py",
        "deploy/prometheus/prometheus.yml",
        "loadtest/results/stats.csv",
    ]
    assert [p for p in kept if dockerignored(p, patterns)] == []
    assert [p for p in dropped if not dockerignored(p, patterns)] == []
    for path in (REPO / "artifacts").rglob("*"):
        if path.suffix in {".onnx", ".json"}:
            assert not dockerignored(path.relative_to(REPO).as_posix(), patterns), path


# ---- Prometheus ---------------------------------------------------------------------------------------------------


def test_prometheus_scrapes_every_api_replica(compose):
    config = load_yaml(PROMETHEUS_YML)
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "nnserve"]
    assert job["scrape_interval"] == "5s" and job.get("metrics_path", "/metrics") == "/metrics"
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["api"] and sd["type"] == "A" and sd["port"] == 3000
    assert "api" in compose["services"] and compose["services"]["api"]["ports"][0].endswith(":3000")
    assert config["rule_files"] == [ALERTS_YML.name]
    mounts = compose["services"]["prometheus"]["volumes"]
    for f in (PROMETHEUS_YML, ALERTS_YML):
        assert f"./{f.relative_to(REPO).as_posix()}:/etc/prometheus/{f.name}:ro" in mounts
    alerts = {name for name, _ in alert_exprs()}
    assert {"NnserveHighErrorRatio", "NnserveHighLatencyP99", "NnserveTargetDown", "NnserveNotReady"} <= alerts


def test_promtool_check_config():
    out = run_tool(promtool(), "check", "config", str(PROMETHEUS_YML))
    assert "SUCCESS" in out


def test_promtool_check_rules():
    out = run_tool(promtool(), "check", "rules", str(ALERTS_YML))
    assert f"SUCCESS: {len(alert_exprs())} rules found" in out


def test_promtool_alert_unit_tests():
    run_tool(promtool(), "test", "rules", str(ALERTS_TEST_YML))


def test_promtool_parses_every_dashboard_query(tmp_path):
    # promtool has no "check expression": each query becomes a recording rule ($__rate_interval -> 1m)
    rules = [
        {"record": f"dashboard:query_{i}", "expr": expr.replace("$__rate_interval", "1m")}
        for i, (_, expr) in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = run_tool(promtool(), "check", "rules", str(path))
    assert f"SUCCESS: {len(rules)} rules found" in out


# ---- PromQL names against the exported series ---------------------------------------------------------------------


def test_promql_extraction():
    expr = (
        'histogram_quantile(0.99, sum by (le, endpoint) (rate(foo_bucket{service_name="x",a=~"/v"}[$__rate_interval])))'
        ' / on (endpoint) group_left sum(bar_total offset 5m) > 1 and absent(up{job="j"} == 1) or baz'
    )
    assert metric_names(expr) == {"foo_bucket", "bar_total", "up", "baz"}
    assert label_names(expr) == {"le", "endpoint", "service_name", "a", "job"}


def test_every_queried_series_is_exported():
    series = exported_series()
    assert {"nnserve_inference_seconds_bucket", "nnserve_predictions_total", "bentoml_service_request_total"} <= set(
        series
    )
    missing = {f"{where}: {name}" for where, expr in all_exprs() for name in metric_names(expr) if name not in series}
    assert not missing, sorted(missing)
    # every nnserve series is on the dashboard
    base = {n: n.rsplit("_", 1)[0] if n.endswith(("_bucket", "_sum", "_count")) else n for n in series}
    nnserve = {base[n] for n in series if n.startswith("nnserve_")}
    shown = {base[name] for _, expr in dashboard_exprs() for name in metric_names(expr)}
    assert nnserve <= shown, sorted(nnserve - shown)


def test_every_queried_label_exists():
    series = exported_series()
    for where, expr in all_exprs():
        names = metric_names(expr)
        known = set().union(*(series[n][1] for n in names)) if names else set(TARGET_LABELS)
        unknown = label_names(expr) - known
        assert not unknown, f"{where}: labels {sorted(unknown)} are on none of {sorted(names)}"
    for panel in dashboard_panels(dashboard()):
        for target in panel.get("targets", []):
            names = metric_names(target["expr"])
            known = set().union(*(series[n][1] for n in names))
            legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            assert legend <= known, f"panel {panel['title']}: legend labels {sorted(legend - known)}"


def test_queried_label_values_exist():
    service_names = set(
        re.findall(
            r'@bentoml\.service\(\s*name="([^"]+)"', "".join(p.read_text() for p in (REPO / "service").rglob("*.py"))
        )
    )
    assert "nnserve" in service_names
    grpc_codes = {c.name for c in grpc.StatusCode}
    for where, expr in all_exprs():
        for metric, selector in re.findall(r"(\w+)\{([^}]*)\}", expr):
            for label, op, value in MATCHER.findall(selector):
                if label == "code" and op in ("=", "=~") and re.fullmatch(r"[\w|-]+", value):
                    codes = grpc_codes if metric == "nnserve_grpc_requests_total" else set(STATUS)
                    assert set(value.split("|")) <= codes, f"{where}: {metric} has no code {value!r}"
        for label, op, value in MATCHER.findall(expr):
            if op == "=":
                values = [value]
            elif op == "=~" and re.fullmatch(r"[\w|-]+", value):  # a plain alternation a|b|c
                values = value.split("|")
            else:
                continue
            if label == "service_name":
                assert set(values) <= service_names, f"{where}: no BentoML service is named {value!r}"
            if label == "job":
                jobs = {j["job_name"] for j in load_yaml(PROMETHEUS_YML)["scrape_configs"]}
                assert set(values) <= jobs, f"{where}: no scrape job {value!r}"


def test_bentoml_series_exist_in_installed_bentoml():
    """The fixed BENTOML_SERIES names are what the installed BentoML declares (its namespace + metric name)."""

    def source(module: str) -> str:
        spec = importlib.util.find_spec(module)
        assert spec and spec.origin, module
        return Path(spec.origin).read_text()

    instruments = source("bentoml._internal.server.http.instruments")
    app = source("_bentoml_impl.server.app")
    config_dir = Path(importlib.util.find_spec("bentoml._internal.configuration").origin).parent
    default_config = load_yaml(config_dir / "v2" / "default_configuration.yaml")
    assert default_config["services"]["metrics"]["namespace"] == "bentoml_service"  # per-service default
    assert 'namespace="bentoml_service"' in app and 'name="adaptive_batch_size"' in app
    for name in BENTOML_SERIES:
        short = name.removeprefix("bentoml_service_")
        assert f'name="{short}"' in instruments + app, f"BentoML no longer declares {name}"


# ---- Grafana ------------------------------------------------------------------------------------------------------


def test_dashboard_uses_the_provisioned_datasource(compose):
    (ds,) = load_yaml(DATASOURCE_YML)["datasources"]
    assert ds["type"] == "prometheus" and ds["uid"]
    assert ds["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]
    d = dashboard()
    panels = dashboard_panels(d)
    assert panels and d["uid"]
    for panel in panels:
        if panel.get("type") == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": ds["uid"]}, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"])["uid"] == ds["uid"], panel["title"]
    for variable in d.get("templating", {}).get("list", []):
        if "datasource" in variable:
            assert variable["datasource"]["uid"] == ds["uid"], variable["name"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"


def test_dashboard_has_the_required_panels():
    queries = " ".join(e for _, e in dashboard_exprs())
    for needed in (
        "bentoml_service_request_total",
        "http_response_code",
        "nnserve_errors_total",
        "histogram_quantile(0.5,",
        "histogram_quantile(0.95,",
        "histogram_quantile(0.99,",
        "nnserve_batch_size_bucket",
        "nnserve_batch_size_sum",
        "nnserve_inference_seconds",
        "nnserve_generated_samples_total",
        "nnserve_predictions_total",
    ):
        assert needed in queries, needed
    provider = load_yaml(DASHBOARDS_YML)["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards"
