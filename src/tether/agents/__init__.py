"""Which agent Tether serves: the user's own (`module:attribute`) or the offline demo."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from pydantic_ai import Agent

from tether.agents.demo import build_demo_agent


class AgentLoadError(RuntimeError):
    pass


def load_agent(spec: str | None, data_dir: Path) -> Agent[Any, Any]:
    """Import `module:attribute` the way uvicorn imports an app; None means the demo agent."""
    if spec is None:
        return build_demo_agent(data_dir)
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise AgentLoadError(f"--agent must look like 'package.module:agent', got {spec!r}")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AgentLoadError(f"cannot import {module_name!r} for --agent: {exc}") from exc
    target: Any = module
    for name in attribute.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise AgentLoadError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(target, Agent):
        raise AgentLoadError(f"{spec} is a {type(target).__name__}, not a pydantic_ai.Agent")
    return target


def check_model(model: str) -> None:
    """Fail at start-up, not at the first run, if a model string cannot be used (unknown provider,
    its package not installed, no API key)."""
    from pydantic_ai.models import infer_model

    try:
        infer_model(model)
    except Exception as exc:
        raise AgentLoadError(f"--model {model!r} cannot be used: {exc}") from exc
