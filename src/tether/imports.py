"""Importing what a flag names as `module:attribute`, the way uvicorn imports an app."""

from __future__ import annotations

import importlib
import sys
from typing import Any


def import_attribute(spec: str, flag: str, error: type[Exception]) -> Any:
    """The object `spec` names (`package.module:attr.sub`), from the current directory too; `error`
    (with a message naming `flag`) if it cannot be found."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise error(f"{flag} must look like 'package.module:attribute', got {spec!r}")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise error(f"cannot import {module_name!r} for {flag}: {exc}") from exc
    for name in attribute.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise error(f"module {module_name!r} has no attribute {attribute!r}") from None
    return target
