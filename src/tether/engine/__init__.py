"""Run lifecycle: the engine, its journal (group commit), runs and stream followers."""

from tether.engine.engine import Engine

__all__ = ["Engine"]
