"""docs/API.md: every /v1 route's request and response fields with their defaults and limits, generated from the
routes' pydantic schemas so it cannot drift from what the server validates.

    .venv/bin/python -m service.apidoc > docs/API.md      (``make api-doc``; tests/test_apidoc.py checks it)

The limits are the defaults of the ``NNSERVE_*`` settings; a server started with other settings states its own
in /docs.json.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from fastapi.routing import APIRoute
from pydantic import BaseModel

CONSTRAINTS = {
    "minItems": "at least {} items",
    "maxItems": "at most {} items",
    "minLength": "at least {} characters",
    "maxLength": "at most {} characters",
    "minimum": "≥ {}",
    "maximum": "≤ {}",
    "exclusiveMinimum": "> {}",
    "exclusiveMaximum": "< {}",
    "pattern": "matches `{}`",
}


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def type_of(schema: dict[str, Any]) -> str:
    """A JSON-schema node -> a short type: ``string``, ``[Prediction]``, ``{string: number}``, ``int | null``."""
    if "$ref" in schema:
        return _ref_name(schema["$ref"])
    if "anyOf" in schema:
        return " | ".join(type_of(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " | ".join(f"`{v!r}`" if isinstance(v, str) else str(v) for v in schema["enum"])
    if "const" in schema:
        return f"`{schema['const']!r}`"
    t = schema.get("type", "any")
    if t == "array":
        if "prefixItems" in schema:
            return "[" + ", ".join(type_of(s) for s in schema["prefixItems"]) + "]"
        return f"[{type_of(schema.get('items', {}))}]"
    if t == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"{{string: {type_of(schema['additionalProperties'])}}}"
    if t == "string" and schema.get("format") == "binary":
        return "file"
    return {"integer": "int", "number": "float", "boolean": "bool"}.get(t, t)


def _limits(schema: dict[str, Any]) -> list[str]:
    found = [text.format(schema[key]) for key, text in CONSTRAINTS.items() if key in schema]
    for branch in schema.get("anyOf", []):
        found += _limits(branch)  # an array branch adds its items' limits there
    if schema.get("type") == "array":
        found += [f"items {x}" for x in _limits(schema.get("items", {}))]
    return found


def fields_table(schema: dict[str, Any], response: bool = False) -> list[str]:
    """A markdown table of an object schema's fields; in a response, "always" marks the fields always sent."""
    required = set(schema.get("required", []))
    rows = ["| field | type | default | limits | meaning |", "|---|---|---|---|---|"]
    for name, prop in schema.get("properties", {}).items():
        if name in required:
            default = "always" if response else "required"
        elif "default" in prop:
            default = f"`{prop['default']!r}`" if prop["default"] is not None else "`None`"
        else:
            default = "—"
        cells = [f"`{name}`", type_of(prop), default, ", ".join(_limits(prop)), prop.get("description", "")]
        rows.append("| " + " | ".join(c.replace("|", "\\|") if i else c for i, c in enumerate(cells)) + " |")
    return rows


def _schema(model: type[BaseModel], mode: str, defs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    schema = model.model_json_schema(mode=mode, ref_template="#/$defs/{model}")  # type: ignore[arg-type]
    defs.update(schema.pop("$defs", {}))
    return schema


def render() -> str:
    from service.service import v1_app

    out = [
        "# The /v1 API: request and response fields",
        "",
        "Generated from the routes' pydantic schemas by `python -m service.apidoc` (`make api-doc`); "
        "`tests/test_apidoc.py` fails when this file and the code disagree. Limits are the defaults of the "
        "`NNSERVE_*` settings (README, Settings); a server states the limits it enforces in `/docs.json`. "
        'Every failure is the envelope `{"error": {"code", "message", "details"}}` (README, API). '
        "`/v2` follows the Open Inference Protocol (README). Every `GET` also answers `HEAD` (its status and "
        "headers, no body).",
        "",
    ]
    defs: dict[str, dict[str, Any]] = {}
    for route in v1_app.routes:
        if not isinstance(route, APIRoute):
            continue
        for method in sorted(set(route.methods or ()) - {"HEAD"}):  # a GET's head: said once, above
            out += [f"## `{method} /v1{route.path}`", "", inspect.cleandoc(route.endpoint.__doc__ or ""), ""]
            dependant = route.dependant
            for kind, params in (
                ("Path", dependant.path_params),
                ("Query", dependant.query_params),
                ("Header", dependant.header_params),
            ):
                if params:
                    out += [f"{kind} parameters: " + ", ".join(f"`{p.alias}`" for p in params), ""]
            if route.body_field is not None:
                body = route.body_field.field_info.annotation
                assert isinstance(body, type) and issubclass(body, BaseModel)
                is_form = body.__name__.startswith("Body_")  # FastAPI's model of a route's form fields
                kind = "multipart/form-data" if is_form else "application/json"
                name = "" if is_form else f" `{body.__name__}`"
                out += [f"Request{name} ({kind}):", "", *fields_table(_schema(body, "validation", defs)), ""]
            response = route.response_model
            if isinstance(response, type) and issubclass(response, BaseModel):
                out += [
                    f"Response `{response.__name__}` (200, application/json):",
                    "",
                    *fields_table(_schema(response, "serialization", defs), response=True),
                    "",
                ]
            else:
                content = (route.responses or {}).get(200, {}).get("content", {})
                out += [f"Response (200): {', '.join(content) or 'see the description'}", ""]
    out += ["## Types used above", "", "In responses, a field marked required is always sent.", ""]
    for name in sorted(defs):
        desc = defs[name].get("description", "")
        out += [f"### `{name}`", "", *([inspect.cleandoc(desc), ""] if desc else []), *fields_table(defs[name]), ""]
    return "\n".join(out)


if __name__ == "__main__":
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    print(render(), end="")
