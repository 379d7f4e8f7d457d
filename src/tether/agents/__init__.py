"""The agents a server serves: each a pydantic-ai Agent with a name, and how to make its deps.

`--agent NAME=module:attribute` (repeatable) names a `pydantic_ai.Agent` or a
`ServedAgent`; without any, the server serves the offline demo agent. A thread
is bound to one agent when it is created (the first one by default).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_ai import Agent, Tool
from pydantic_ai.models import Model
from pydantic_ai.toolsets import FunctionToolset

from tether.agents.demo import build_demo_agent
from tether.errors import BadRequest, Unprocessable
from tether.imports import import_attribute

DEMO = "demo"
"""The name of the offline demo agent, served when no --agent is given."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class AgentLoadError(RuntimeError):
    pass


@dataclass(frozen=True)
class RunInfo:
    """What a deps factory is told about the run it makes deps for."""

    thread_id: str
    run_id: str
    user: str | None
    """The id of the thread's user, or None on a server without users."""
    agent: str
    """The name the agent is served under."""
    thread_metadata: dict[str, Any]
    state: Any = None
    """What the agent's lifespan yielded (a connection pool, a client): resources made once, shared."""
    execution: str = "start"
    """Which execution of the run this is: "start", "resume" (after approval decisions) or "recover"
    (after a crash, or on another worker). The factory is called for each: deps are never stored."""


DepsFactory = Callable[[RunInfo], Any]
"""Given a RunInfo, returns the run's deps (or an awaitable of them)."""


@dataclass(frozen=True)
class ServedAgent:
    """A pydantic-ai Agent as Tether serves it.

    `deps` is called for every execution of a run (its start, its resume after approval, its recovery
    after a crash) and its result is the run's `deps`; if it raises, the run fails with its message.
    `lifespan`, an async context manager factory, runs while the server runs: what it yields is given
    to `deps` as `RunInfo.state`. `model` replaces the agent's own model (unless the run or `--model`
    names one); `description` is shown in `GET /v1/agents` and the UI.
    """

    agent: Agent[Any, Any]
    _: KW_ONLY
    deps: DepsFactory | None = None
    description: str | None = None
    model: str | Model | None = None
    lifespan: Callable[[], AbstractAsyncContextManager[Any]] | None = None


class DepsError(RuntimeError):
    """The agent's deps factory raised: the run fails with this message."""


class UnknownAgent(BadRequest):
    def __init__(self, message: str) -> None:
        super().__init__(message, code="unknown_agent")


AgentLike = Agent[Any, Any] | ServedAgent


@dataclass
class Agents:
    """The agents of one server, by name; the first is the default for new threads."""

    served: dict[str, ServedAgent]
    _states: dict[str, Any] = field(default_factory=dict)
    _lifespans: AsyncExitStack | None = None

    @classmethod
    def of(cls, agents: AgentLike | Mapping[str, AgentLike]) -> Agents:
        """From objects, as an embedding app passes them: one agent, or a mapping name → agent."""
        if not isinstance(agents, Mapping):
            agents = {_default_name(agents): agents}
        if not agents:
            raise AgentLoadError("no agents to serve")
        served = {}
        for name, agent in agents.items():
            _check_name(name)
            served[name] = agent if isinstance(agent, ServedAgent) else _served(agent, name)
        return cls(served)

    @property
    def default(self) -> str:
        return next(iter(self.served))

    def resolve(self, name: str | None) -> str:
        """The name of the agent a thread asks for (None: the default); UnknownAgent if it is not served."""
        if name is None:
            return self.default
        if name not in self.served:
            raise UnknownAgent(f"unknown agent {name!r}; this server serves: {', '.join(self.served)}")
        return name

    async def make_deps(self, info: RunInfo) -> Any:
        """The deps of one execution, from the agent's factory (None without one)."""
        factory = self.served[info.agent].deps
        if factory is None:
            return None
        try:
            deps = factory(info)
            if inspect.isawaitable(deps):
                deps = await deps
        except Exception as exc:
            raise DepsError(f"agent {info.agent!r} could not make its deps: {type(exc).__name__}: {exc}") from exc
        return deps

    def state(self, name: str) -> Any:
        return self._states.get(name)

    async def start(self) -> None:
        """Enter every agent's lifespan, in order; if one fails, those entered are exited."""
        stack = AsyncExitStack()
        async with stack:
            for name, served in self.served.items():
                if served.lifespan is not None:
                    self._states[name] = await stack.enter_async_context(served.lifespan())
            self._lifespans = stack.pop_all()

    async def stop(self) -> None:
        """Exit the lifespans, the last entered first."""
        stack, self._lifespans = self._lifespans, None
        self._states.clear()
        if stack is not None:
            await stack.aclose()

    def instrument(self, tracer_provider: Any) -> None:
        """Have pydantic-ai trace these agents' model requests and tool calls into `tracer_provider`
        (an agent instrumented by its own code keeps its settings)."""
        from pydantic_ai.models.instrumented import InstrumentationSettings

        for served in self.served.values():
            if served.agent.instrument is None:
                served.agent.instrument = InstrumentationSettings(tracer_provider=tracer_provider)

    def check_args(self, agent: str | None, tool: str, args: dict[str, Any]) -> None:
        """Raise Unprocessable (422 invalid_args) unless `args` are valid arguments of the agent's tool, by
        the tool's own validator: edited arguments of an approval are checked before they are stored. A
        tool this cannot see (from an MCP server or another toolset) is checked by pydantic-ai as it runs."""
        served = self.served.get(agent or self.default)
        found = _function_tool(served.agent, tool) if served is not None else None
        if found is None:
            return
        try:
            found.function_schema.validator.validate_python(args)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors(include_url=False)
            )
            raise Unprocessable(f"the arguments do not fit {tool}: {problems}", code="invalid_args") from exc

    def describe(self, model_override: str | None) -> list[dict[str, Any]]:
        """What `GET /v1/agents` shows of each agent."""
        return [
            {
                "name": name,
                "description": served.description,
                "model": _model_name(model_override or served.model or served.agent.model),
                "tools": _tools(served.agent),
            }
            for name, served in self.served.items()
        ]


def load_agents(specs: tuple[str, ...], data_dir: Path) -> Agents:
    """`NAME=module:attribute` or `module:attribute` (named after the attribute) for each --agent;
    none means the offline demo agent."""
    if not specs:
        description = "The offline demo agent: scripted answers, real tools, approvals. No model, no network."
        return Agents({DEMO: ServedAgent(build_demo_agent(data_dir), description=description)})
    loaded: dict[str, AgentLike] = {}
    for spec in specs:
        name, sep, target = spec.rpartition("=")
        if not sep:
            name = target.rpartition(":")[2].rpartition(".")[2]
        if name in loaded:
            raise AgentLoadError(f"two agents are named {name!r}; name them: --agent NAME=module:attribute")
        loaded[name] = _import(target)
    return Agents.of(loaded)


def _import(spec: str) -> AgentLike:
    target = import_attribute(spec, "--agent", AgentLoadError)
    if not isinstance(target, Agent | ServedAgent):
        raise AgentLoadError(f"{spec} is a {type(target).__name__}, not a pydantic_ai.Agent or a tether.ServedAgent")
    return target


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise AgentLoadError(
            f"agent name {name!r} must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )


def _default_name(agent: AgentLike) -> str:
    inner = agent.agent if isinstance(agent, ServedAgent) else agent
    return inner.name or "agent"


def _served(agent: Any, name: str) -> ServedAgent:
    if not isinstance(agent, Agent):
        raise AgentLoadError(f"agent {name!r} is a {type(agent).__name__}, not a pydantic_ai.Agent or a ServedAgent")
    return ServedAgent(agent)


def _model_name(model: str | Model | Any) -> str | None:
    if model is None or isinstance(model, str):
        return model
    if isinstance(model, Model):
        return f"{model.system}:{model.model_name}"
    return str(model)


def _function_tools(agent: Agent[Any, Any]) -> list[Tool[Any]]:
    """The agent's function tools (those of MCP servers and other toolsets are known only per run)."""
    return [tool for ts in agent.toolsets if isinstance(ts, FunctionToolset) for tool in ts.tools.values()]


def _function_tool(agent: Agent[Any, Any], name: str) -> Tool[Any] | None:
    return next((tool for tool in _function_tools(agent) if tool.name == name), None)


def _tools(agent: Agent[Any, Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": tool.name,
            "description": tool.description,
            "requires_approval": bool(tool.requires_approval),
            "parameters": tool.function_schema.json_schema,
        }
        for tool in _function_tools(agent)
    ]


def check_model(model: str) -> None:
    """Fail at start-up, not at the first run, if a model string cannot be used (unknown provider,
    its package not installed, no API key)."""
    from pydantic_ai.models import infer_model

    try:
        infer_model(model)
    except Exception as exc:
        raise AgentLoadError(f"--model {model!r} cannot be used: {exc}") from exc
