"""What /openapi.json declares, which Schemathesis takes on trust."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tether.api.protocols.history import CLIENT_ID_PATTERN

from .conftest import ServerThread

TOKEN = "fuzz-token-0123456789"


def spec(server: ServerThread) -> dict[str, Any]:
    return httpx.get(f"{server.url}/openapi.json").json()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in document["paths"].items() for method, op in ops.items()]


ERROR_OUT = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}


@pytest.mark.sqlite_only  # what the OpenAPI says does not depend on the engines
def test_the_openapi_says_how_callers_authenticate(start_server):
    """With a token: the bearer scheme on every /v1 operation and /metrics, and a 401 each answers;
    nothing on /healthz. Without auth: no scheme."""
    with_token = spec(start_server(token=TOKEN))
    (name, scheme), *others = with_token["components"]["securitySchemes"].items()
    assert (name, scheme["type"], scheme["scheme"], others) == ("bearer", "http", "bearer", [])
    for method, path, op in operations(with_token):
        if path.startswith(("/v1/", "/metrics")):
            assert op["security"] == [{"bearer": []}], (method, path)
            assert op["responses"]["401"]["content"] == ERROR_OUT, (method, path)
        else:
            assert "security" not in op and "401" not in op["responses"], (method, path)
    without = spec(start_server())
    assert "securitySchemes" not in without["components"]
    assert all("security" not in op for _, _, op in operations(without))


@pytest.mark.sqlite_only
def test_the_openapi_names_the_agents_and_what_pydantic_leaves_out(server: ServerThread):
    schemas = spec(server)["components"]["schemas"]
    assert schemas["CreateThread"]["properties"]["agent"]["anyOf"][0]["enum"] == ["demo"]
    # A discriminated union's tag is required: pydantic cannot tell a message without a `role` apart.
    for name in ("UserMessage", "AssistantMessage", "ToolMessage", "ActivityMessage", "ReasoningMessage"):
        assert "role" in schemas[name]["required"], name
    for model, field in (("RunAgentInput", "threadId"), ("RunAgentInput", "runId"), ("ChatRequest", "id")):
        assert schemas[model]["properties"][field]["pattern"] == CLIENT_ID_PATTERN, (model, field)
