"""The route table the middleware and the metrics read: which /v1 routes take JSON and which a multipart form
(from the registered tasks' routers), and the bounded ``endpoint`` label of any path (a route template, never
the raw path a client sent)."""

from __future__ import annotations

import functools
from collections.abc import MutableMapping
from typing import Any

from fastapi import params
from fastapi.routing import APIRoute

from service.registry import TASKS

FIGURE_ROUTE = "/v1/models/{name}/figures/{figure}"
V2_ROUTES = frozenset({"/v2", "/v2/", "/v2/health/live", "/v2/health/ready"})


@functools.cache
def _body_routes(n_tasks: int) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    json_routes: set[str] = set()
    form_routes: set[str] = set()
    image_routes: set[str] = set()
    for task in TASKS.values():
        for route in task.router.routes:
            if not isinstance(route, APIRoute) or not route.dependant.body_params:
                continue
            form = any(isinstance(p.field_info, params.Form) for p in route.dependant.body_params)
            (form_routes if form else json_routes).add("/v1" + route.path)
            body = route.dependant.body_params[0].field_info.annotation
            if not form and "images" in getattr(body, "model_fields", {}):
                image_routes.add("/v1" + route.path)
    return frozenset(json_routes), frozenset(form_routes), frozenset(image_routes)


def json_routes() -> frozenset[str]:
    """/v1 routes whose body is JSON (a pydantic request model)."""
    return _body_routes(len(TASKS))[0]


def form_routes() -> frozenset[str]:
    """/v1 routes whose body is multipart/form-data (File and Form parameters)."""
    return _body_routes(len(TASKS))[1]


def image_routes() -> frozenset[str]:
    """/v1 JSON routes that take base64 images (their request model's ``images``)."""
    return _body_routes(len(TASKS))[2]


# BentoML's own top-level routes, read without trailing slashes as /v1 and /v2 paths are (a mount root such as
# /static_content/ or /ui/ is left as it is: its page's relative links need the slash)
PLAIN_ROUTES = frozenset({"/metrics", "/livez", "/readyz", "/healthz", "/docs.json", "/schema.json"})
# BentoML's mounts, read with their slash: without it Starlette redirects to a Location built from the Host header
MOUNTS = frozenset({"/static_content", "/assets"})  # /assets: with BentoML's new_index feature


def without_trailing_slashes(scope: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """An HTTP scope whose /v1 or /v2 path, or one of PLAIN_ROUTES, ends in slashes, as the same path without them
    (and a mount's root, MOUNTS, as the path with its slash):
    Starlette would answer 307 to a Location built from the Host header (an open redirect), and the gates that
    read the path (the API key, the /metrics cache, admission's media types) must see the route it reaches."""
    path: str = scope["path"]
    if path in MOUNTS:  # Starlette's answer, a 307 to http://<the Host header>/static_content/, as the slash's
        return {**scope, "path": path + "/", "raw_path": path.encode() + b"/"}
    if len(path) < 2 or not path.endswith("/"):
        return scope
    stripped = path.rstrip("/") or "/"
    if not (stripped.startswith(("/v1/", "/v2/")) or stripped in ("/v1", "/v2") or stripped in PLAIN_ROUTES):
        return scope
    raw: bytes = (scope.get("raw_path") or b"").rstrip(b"/")
    return {**scope, "path": stripped, "raw_path": raw or stripped.encode()}


def endpoint_label(path: str) -> str:
    """A bounded label: the route template, never the raw path."""
    if path in json_routes() or path in form_routes() or path == "/v1/models" or path in V2_ROUTES:
        return path.rstrip("/") if path != "/" else path
    if path.startswith("/v1/models/"):
        parts = path.split("/")  # "", "v1", "models", name, "figures", figure
        return FIGURE_ROUTE if len(parts) == 6 and parts[4] == "figures" else "/v1/models/{name}"
    if path.startswith("/v2/models/"):
        path = path.rstrip("/")
        if path == "/v2/models/stats":
            return path
        for suffix in ("/infer", "/ready", "/config", "/stats"):
            if path.endswith(suffix):
                return "/v2/models/{name}" + suffix
        return "/v2/models/{name}"
    if path.startswith("/v2/repository/"):
        return _repository_label(path)
    return "other"


def _repository_label(path: str) -> str:
    if path.rstrip("/") == "/v2/repository/index":
        return "/v2/repository/index"
    for action in ("load", "unload"):
        if path.startswith("/v2/repository/models/") and path.rstrip("/").endswith(f"/{action}"):
            return f"/v2/repository/models/{{name}}/{action}"
    return "other"


def is_oip(path: str) -> bool:
    return path == "/v2" or path.startswith("/v2/")


def one_host(scope: MutableMapping[str, Any]) -> bool:
    """Whether the request may be answered: a server must answer 400 to an HTTP/1.1 request without a Host header
    line and to any request with several (RFC 9112 section 3.2); HTTP/1.0 need not send one."""
    hosts = sum(1 for name, _ in scope["headers"] if name == b"host")
    return hosts == 1 or (hosts == 0 and scope.get("http_version") != "1.1")
