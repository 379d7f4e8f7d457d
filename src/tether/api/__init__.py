"""HTTP API: routes, request/response schemas, errors, SSE encoding."""
