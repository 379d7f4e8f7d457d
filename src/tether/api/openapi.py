"""What /openapi.json says beyond what FastAPI infers from the routes: how this server authenticates its
callers and which agents it serves (facts of one server, from its flags), and what pydantic's schemas
leave out. Schemathesis (tests/test_fuzz.py) holds the server to every word of it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI

from tether.api.auth import Auth
from tether.api.protocols.history import CLIENT_ID_PATTERN
from tether.api.routes import ERROR_OUT, error
from tether.attachments import kind


def describe(
    app: FastAPI,
    auth: Auth,
    protected: tuple[str, ...],
    agents: Iterable[str],
    *,
    rate_limited: bool,
    attachment_types: Iterable[str],
    max_attachments: int,
) -> None:
    """Make the app's /openapi.json tell these facts too (`protected`: the paths that need a caller;
    `rate_limited`: whether `--rate-limit` is set; `attachment_types`, `max_attachments`: the flags)."""
    generate = app.openapi
    names = list(agents)
    types = list(attachment_types)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()  # FastAPI keeps it as app.openapi_schema: it is amended once, in place
            _authentication(schema, auth, protected)
            if rate_limited:
                _rate_limit(schema, protected)
            _agents(schema, names)
            _attachments(schema, types, max_attachments)
            _tags_required(schema)
            _client_ids(schema)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _authentication(schema: dict[str, Any], auth: Auth, protected: tuple[str, ...]) -> None:
    """With `--token` or `--users` every protected operation (/v1, and /metrics unless it is public)
    needs the bearer scheme; with any auth each answers 401 without a caller, and with `--auth` 500
    when the function fails. /healthz needs nothing."""
    if auth.kind == "none":
        return
    bearer = auth.kind in ("token", "users")
    unauthorized = {
        "description": "A missing or wrong bearer token (`unauthorized`)."
        if bearer
        else "The `--auth` function found no caller (`unauthorized`).",
        "headers": {"WWW-Authenticate": {"required": True, "schema": {"type": "string", "const": "Bearer"}}},
        "content": {"application/json": {"schema": {"$ref": ERROR_OUT}}},
    }
    if bearer:
        schema["components"].setdefault("securitySchemes", {})["bearer"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "The server's `--token`, or a user's token from `--users`.",
        }
    failed = error(500) | {"description": "The `--auth` function raised or returned no valid id (`auth_failed`)."}
    for path, operations in schema["paths"].items():
        if path.startswith(protected):
            for operation in operations.values():
                operation["responses"]["401"] = unauthorized
                if bearer:
                    operation["security"] = [{"bearer": []}]
                elif "500" not in operation["responses"]:
                    operation["responses"]["500"] = failed


def _rate_limit(schema: dict[str, Any], protected: tuple[str, ...]) -> None:
    """With `--rate-limit` every operation that has a caller answers 429 past the caller's rate."""
    rate = "More requests a minute than `--rate-limit` (`rate_limited`; `Retry-After` says when to try again)."
    for path, operations in schema["paths"].items():
        if path.startswith(protected):
            for operation in operations.values():
                limits = operation["responses"].get("429")
                described = rate if limits is None else f"{limits['description']} {rate}"
                operation["responses"]["429"] = error(429) | {"description": described}


def _agents(schema: dict[str, Any], names: list[str]) -> None:
    """A new thread's `agent` is one this server serves (else `400 unknown_agent`)."""
    agent = schema["components"]["schemas"]["CreateThread"]["properties"]["agent"]
    agent["anyOf"] = [{"type": "string", "enum": names}, {"type": "null"}]


def _attachments(schema: dict[str, Any], types: list[str], most: int) -> None:
    """A message holds at most `--max-attachments` parts that are not text (else `413
    too_many_attachments`); an attachment's media type is one this server takes (else `415
    unsupported_media_type`): an image part's an image type, a file part's any other; and the
    attachment route serves them."""
    components = schema["components"]["schemas"]
    (parts,) = [s for s in components["CreateRun"]["properties"]["input"]["oneOf"] if s.get("type") == "array"]
    attached = {"required": ["type"], "properties": {"type": {"enum": ["image", "file"]}}}
    parts.update(contains=attached, minContains=0, maxContains=most)
    for part, images in (("InputImage", True), ("InputFile", False)):
        allowed = [t for t in types if (kind(t) == "image") == images]
        components[part]["properties"]["media_type"]["enum"] = allowed
    served = schema["paths"]["/v1/attachments/{attachment_id}"]["get"]["responses"]["200"]
    served["content"] = {t: {"schema": {"type": "string", "format": "binary"}} for t in types}


def _tags_required(schema: dict[str, Any]) -> None:
    """A discriminated union needs its tag in every value (pydantic answers 422 without it), but
    pydantic documents a tag that has a default (AG-UI's message `role`, a part's `type`) as optional."""

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            discriminator = node.get("discriminator")
            if isinstance(discriminator, dict):
                for ref in discriminator.get("mapping", {}).values():
                    variant = components[ref.rsplit("/", 1)[-1]]
                    required = variant.setdefault("required", [])
                    if discriminator["propertyName"] not in required:
                        required.append(discriminator["propertyName"])
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    components = schema["components"]["schemas"]
    visit(schema)


def _client_ids(schema: dict[str, Any]) -> None:
    """The ids an AG-UI client names its thread and run by (`RunAgentInput` is AG-UI's own model)."""
    run_input = schema["components"]["schemas"]["RunAgentInput"]
    for field in ("threadId", "runId"):
        run_input["properties"][field]["pattern"] = CLIENT_ID_PATTERN
