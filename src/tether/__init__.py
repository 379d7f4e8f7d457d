"""Tether: a self-hosted server for AI-agent chats whose runs never break.

What an app that serves or embeds Tether imports from here: `ServedAgent` and `RunInfo` (an agent
with a deps factory), `create_app` and `running` (mount Tether inside your own ASGI app), `Settings`,
and `Client` (the synchronous Python client).
They are loaded on first use, so that `tether --help` does not import the whole server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from tether.agents import RunInfo, ServedAgent
    from tether.app import create_app, running
    from tether.client import Client
    from tether.config import Settings

_EXPORTS = {
    "Client": "tether.client",
    "RunInfo": "tether.agents",
    "ServedAgent": "tether.agents",
    "create_app": "tether.app",
    "running": "tether.app",
    "Settings": "tether.config",
}
__all__ = ["Client", "RunInfo", "ServedAgent", "Settings", "__version__", "create_app", "running"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tether' has no attribute {name!r}")
