"""Run config is checked whole before any step runs.

Dagster checks run config against its schema when a run is launched (types, required keys, the values of a
`Literal`), but the constraints of a pydantic `Config` (`ge=`, `le=`, `allow_inf_nan=False`, validators) only run
when a step builds its `Config` object, that is after the steps before it have done their work: a run whose last step
had `max_nsfw_score: .nan` would ingest, fetch and score a crawl, then fail. So every run of this code location goes
through `validated_executor`, which builds every selected op's `Config` and every resource from the run config first
and fails the run, before its first step, with one message listing every bad value. `danqing materialize` and the
other CLI runs (in-process, where Dagster ignores the code location's executor) call `check_run_config` themselves.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import dagster as dg
from pydantic import ValidationError


class RunConfigRefused(ValueError):
    """Run config with values the project's Config classes refuse; the message lists each one."""


def config_class_of(op_def: dg.OpDefinition) -> type[dg.Config] | None:
    """The `Config` class an op's (or asset's) function takes as `config`, if any."""
    fn = getattr(op_def.compute_fn, "decorated_fn", None)
    if fn is None:
        return None
    try:
        annotation = typing.get_type_hints(fn).get("config")
    except (NameError, TypeError):
        annotation = inspect.signature(fn).parameters.get("config")
        annotation = getattr(annotation, "annotation", None)
    return annotation if isinstance(annotation, type) and issubclass(annotation, dg.Config) else None


def _describe(exc: ValidationError, where: str) -> Iterator[str]:
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        value = err.get("input")
        shown = repr(value) if not isinstance(value, Mapping) else "..."
        yield f"{where}{'.' + loc if loc else ''}: {err.get('msg', 'invalid')} (got {shown})"


def config_problems(job_def: dg.JobDefinition, run_config: Mapping[str, Any] | None,
                    op_names: Iterable[str] | None = None) -> list[str]:
    """Every value of `run_config` that the job's Config classes or resources refuse, as 'path: reason (got value)';
    empty when the run may start. `op_names` limits the op check to those ops (the run's selection)."""
    try:
        resolved = dg.validate_run_config(job_def, dict(run_config or {}))
    except dg.DagsterInvalidConfigError as exc:
        return [err.message for err in exc.errors] or [str(exc)]
    wanted = set(op_names) if op_names is not None else None
    problems: list[str] = []
    for node in job_def.graph.nodes:
        if wanted is not None and node.name not in wanted:
            continue
        cls = config_class_of(node.definition) if isinstance(node.definition, dg.OpDefinition) else None
        if cls is None:
            continue
        values = (resolved.get("ops", {}).get(node.name) or {}).get("config") or {}
        try:
            cls(**values)
        except ValidationError as exc:
            problems.extend(_describe(exc, f"ops.{node.name}.config"))
    for key, resource_def in job_def.resource_defs.items():
        cls = getattr(resource_def, "configurable_resource_cls", None)
        values = (resolved.get("resources", {}).get(key) or {}).get("config")
        if cls is None or not isinstance(values, Mapping):
            continue
        try:
            cls(**values)
        except ValidationError as exc:
            problems.extend(_describe(exc, f"resources.{key}.config"))
        except Exception:  # noqa: BLE001 - a resource that needs its nested resources is checked when it is built
            continue
    return problems


def check_run_config(job_def: dg.JobDefinition, run_config: Mapping[str, Any] | None,
                     op_names: Iterable[str] | None = None) -> None:
    """Raise `RunConfigRefused` naming every bad value; nothing has run yet when it does."""
    problems = config_problems(job_def, run_config, op_names)
    if problems:
        raise RunConfigRefused(
            f"run config refused before any step ran ({len(problems)} bad value{'s' if len(problems) > 1 else ''}):\n"
            + "\n".join(f"  - {p}" for p in problems))


class _ValidatingExecutor(dg.Executor):
    """Checks the run config of the whole run, then hands the plan to the executor the run config chose."""

    def __init__(self, inner: dg.Executor) -> None:
        self._inner = inner

    @property
    def retries(self):
        return self._inner.retries

    @property
    def step_dependency_config(self):
        return self._inner.step_dependency_config

    def execute(self, plan_context, execution_plan):
        job_def = plan_context.job.get_definition()
        ops = {step.node_handle.root.name for step in execution_plan.get_all_steps_in_topo_order()}
        check_run_config(job_def, plan_context.run_config, ops)
        yield from self._inner.execute(plan_context, execution_plan)


_BASE = dg.multi_or_in_process_executor

validated_executor = dg.ExecutorDefinition(
    name="validated_multi_or_in_process",
    config_schema=_BASE.config_schema,
    requirements=_BASE.get_requirements,
    executor_creation_fn=lambda init_context: _ValidatingExecutor(_BASE.executor_creation_fn(init_context)),
    description="Dagster's default executor (multiprocess, or in_process by run config), after the whole run config "
    "has passed the project's Config classes.",
)
