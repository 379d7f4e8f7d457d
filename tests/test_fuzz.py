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
    nothing on /healthz. Without auth: no scheme, no 401 (none is ever answered)."""
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
    assert all("401" not in op["responses"] and "security" not in op for _, _, op in operations(without))


@pytest.mark.sqlite_only
def test_the_openapi_says_where_a_rate_limit_applies(start_server):
    for method, path, op in operations(spec(start_server(rate_limit=600))):
        assert ("429" in op["responses"]) == path.startswith(("/v1/", "/metrics")), (method, path)
        if path.startswith(("/v1/", "/metrics")):
            assert "--rate-limit" in op["responses"]["429"]["description"], (method, path)


@pytest.mark.sqlite_only
def test_the_openapi_names_the_agents_and_what_pydantic_leaves_out(server: ServerThread):
    schemas = spec(server)["components"]["schemas"]
    assert schemas["CreateThread"]["properties"]["agent"]["anyOf"][0]["enum"] == ["demo"]
    # A discriminated union's tag is required: pydantic cannot tell a message without a `role` apart.
    for name in ("UserMessage", "AssistantMessage", "ToolMessage", "ActivityMessage", "ReasoningMessage"):
        assert "role" in schemas[name]["required"], name
    for model, field in (("RunAgentInput", "threadId"), ("RunAgentInput", "runId"), ("ChatRequest", "id")):
        assert schemas[model]["properties"][field]["pattern"] == CLIENT_ID_PATTERN, (model, field)


@pytest.mark.sqlite_only
def test_the_openapi_documents_errors_streams_and_resume_points(server: ServerThread):
    document = spec(server)
    streams = {
        "/v1/threads/{thread_id}/stream",
        "/v1/runs/{run_id}/stream",
        "/v1/events",
        "/v1/ag-ui",
        "/v1/ai-sdk/chat",
        "/v1/ai-sdk/chat/{chat_id}/stream",
    }
    for method, path, op in operations(document):
        for status, response in op["responses"].items():
            if status.startswith(("4", "5")) and (path, status) != ("/healthz", "503"):
                assert response["content"] == ERROR_OUT, (method, path, status)  # JSON, on a stream's route too
        if path in streams:
            assert list(op["responses"]["200"]["content"]) == ["text/event-stream"], (method, path)
    for path in ("/v1/threads/{thread_id}/stream", "/v1/runs/{run_id}/stream", "/v1/events"):
        parameters = {p["name"]: p["schema"] for p in document["paths"][path]["get"]["parameters"]}
        for name in ("after", "last-event-id"):
            assert parameters[name]["type"] == "string" and parameters[name]["pattern"] == "^[0-9]{0,19}$"
