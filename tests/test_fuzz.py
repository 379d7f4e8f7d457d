"""Schemathesis over a live server's /openapi.json, on both engines: every operation, every check.

Its CLI runs against a real server on loopback that needs a bearer token (so the auth paths are
fuzzed too), with the settings in tests/schemathesis.toml: a fixed seed, a bounded number of examples
per operation, its coverage, fuzzing and stateful phases, and event streams read for one event or a
second at most. It fails on anything it finds: a server error, a status an operation does not
document, a response unlike its schema, bad data accepted or good data refused, a wrong `Allow`.
The suppressions it runs with are in that file, each with its reason.

The rest of this file checks what the OpenAPI declares that Schemathesis takes on trust.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tether.api.protocols.history import CLIENT_ID_PATTERN

from .conftest import ServerThread

TOKEN = "fuzz-token-0123456789"
CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.mark.timeout(400)
def test_schemathesis_finds_nothing(start_server, tmp_path: Path) -> None:
    server: ServerThread = start_server(token=TOKEN)
    started = time.monotonic()
    result = subprocess.run(
        [
            *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "--no-color"),
            *("run", "--checks", "all", f"{server.url}/openapi.json"),
        ],
        cwd=tmp_path,  # its caches and reports stay out of the work tree
        env={**os.environ, "TETHER_FUZZ_TOKEN": TOKEN},
        capture_output=True,
        text=True,
        timeout=360,
    )
    print(f"schemathesis took {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    count = len(operations(spec(server)))
    assert f"{count} selected / {count} total" in result.stdout and f"Tested: {count}" in result.stdout, result.stdout


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
    custom = spec(start_server(auth="tests.auth:by_header"))  # no scheme to name; its failure is a 500
    assert "securitySchemes" not in custom["components"]
    for method, path, op in operations(custom):
        protected = path.startswith(("/v1/", "/metrics"))
        assert ("401" in op["responses"], "500" in op["responses"]) == (protected, protected), (method, path)
        if protected:
            assert "auth_failed" in op["responses"]["500"]["description"], (method, path)


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


@pytest.mark.sqlite_only
def test_the_openapi_describes_a_message_s_parts_and_the_attachment_route(start_server):
    """What the server's flags allow: the media types of an image and of a file, how many attachments a
    message may hold, and what the attachment route may answer."""
    document = spec(start_server(attachment_types=("image/png", "text/plain", "application/pdf"), max_attachments=3))
    schemas = document["components"]["schemas"]
    assert schemas["InputImage"]["properties"]["media_type"]["enum"] == ["image/png"]
    assert schemas["InputFile"]["properties"]["media_type"]["enum"] == ["text/plain", "application/pdf"]
    [text, parts] = schemas["CreateRun"]["properties"]["input"]["oneOf"]
    assert text["type"] == "string" and parts["type"] == "array" and parts["maxContains"] == 3
    assert set(parts["items"]["discriminator"]["mapping"]) == {"text", "image", "file"}
    served = document["paths"]["/v1/attachments/{attachment_id}"]["get"]["responses"]
    assert list(served["200"]["content"]) == ["image/png", "text/plain", "application/pdf"]
    assert served["404"]["content"] == ERROR_OUT
    assert {"413", "415"} <= set(document["paths"]["/v1/threads/{thread_id}/runs"]["post"]["responses"])
