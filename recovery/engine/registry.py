"""Step types: a name such as `keys.generate` mapped to a function, its inputs and outputs.

Each step type declares its inputs as one frozen dataclass (a description in each
field's metadata) and its outputs by name. Validation, `recovery steps` and the
runner all read these declarations, so the documentation cannot drift from the
checks. A step also says whether it is *repeatable* (safe to run again on a
resumed run), *retryable* (the runner may retry it after a transient error) and
whether it *changes* anything (a key written, a key published, a console typed
into, the cloud changed): the pre-flight (`recovery.engine.preflight`) runs the checks
declared next to the parameters before the first step that does.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args, get_origin

from recovery.safety.redact import Secret

if typing.TYPE_CHECKING:
    from recovery.engine.config import Config
    from recovery.engine.context import StepContext

Outputs = dict[str, object]
P = TypeVar("P")
StepFunction = Callable[["StepContext", Any], Outputs]
PreviewFunction = Callable[[Any], list[str]]
ValueCheck = Callable[[Any], "str | None"]
"""One parameter's check: a problem in words, or None. Called only with a known, well-typed value."""
StepCheck = Callable[[Mapping[str, object], "Config"], "list[str]"]
"""A step's check across its parameters; values not known yet are `templating.Unknown`."""
Predict = Callable[[Mapping[str, object]], Mapping[str, object]]
"""Outputs a step will certainly give, from its parameters alone (values may be `templating.Unknown`)."""

MISSING = dataclasses.MISSING


@dataclass(frozen=True)
class InputSpec:
    name: str
    annotation: object
    required: bool
    default: object
    description: str
    check: ValueCheck | None = None

    @property
    def type_name(self) -> str:
        return describe_type(self.annotation)


@dataclass(frozen=True)
class StepType:
    name: str
    summary: str
    function: StepFunction
    params: type
    outputs: Mapping[str, str]
    repeatable: bool
    retryable: bool
    preview: PreviewFunction | None = None
    changes: bool = True
    check: StepCheck | None = None
    predict: Predict | None = None
    warm: tuple[str, ...] = ()

    def inputs(self) -> list[InputSpec]:
        hints = typing.get_type_hints(self.params)
        specs = []
        for field in dataclasses.fields(self.params):
            has_default = field.default is not MISSING or field.default_factory is not MISSING
            default = field.default if field.default is not MISSING else None
            specs.append(
                InputSpec(
                    name=field.name,
                    annotation=hints[field.name],
                    required=not has_default,
                    default=default,
                    description=str(field.metadata.get("doc", "")),
                    check=field.metadata.get("check"),
                )
            )
        return specs


_REGISTRY: dict[str, StepType] = {}


def step(
    name: str,
    *,
    params: type,
    outputs: Mapping[str, str],
    repeatable: bool,
    retryable: bool = False,
    preview: PreviewFunction | None = None,
    changes: bool = True,
    check: StepCheck | None = None,
    predict: Predict | None = None,
    warm: tuple[str, ...] = (),
) -> Callable[[StepFunction], StepFunction]:
    """Register a step type. `repeatable=False` steps are skipped, not rerun, on --resume.

    Args:
        changes: False only for a step that reads (a cloud lookup): the pre-flight may come after it.
        check: checks across parameters, run by the pre-flight (see `StepCheck`).
        predict: outputs known before the step runs, so a dry run shows what the real run will do.
        warm: modules the step imports when it runs and that are slow to import (paramiko: ~0.2 s); an earlier
            step that waits on the VM imports them meanwhile (`StepContext.overlap`).
    """

    def register(function: StepFunction) -> StepFunction:
        if name in _REGISTRY:
            raise RuntimeError(f"step type {name} registered twice")
        summary = (function.__doc__ or "").strip().splitlines()[0] if function.__doc__ else ""
        _REGISTRY[name] = StepType(
            name, summary, function, params, dict(outputs), repeatable, retryable, preview, changes, check, predict,
            warm,
        )
        return function

    return register


def doc(text: str, *, check: ValueCheck | None = None, **kwargs: Any) -> Any:
    """A dataclass field with a description and, optionally, the pre-flight check of its value."""
    return dataclasses.field(metadata={"doc": text, "check": check}, **kwargs)


def registered() -> Mapping[str, StepType]:
    """The step types registered so far; `recovery.engine.catalog.step_types` loads them all first."""
    return dict(sorted(_REGISTRY.items()))


def describe_type(annotation: object) -> str:
    if annotation is str:
        return "string"
    if annotation is bool:
        return "boolean"
    if annotation is int:
        return "integer"
    if annotation is float:
        return "number"
    if annotation is Secret:
        return "secret"
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(annotation))
    if _is_union(annotation):
        return " or ".join(describe_type(a) for a in get_args(annotation))
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _is_union(annotation: object) -> bool:
    return get_origin(annotation) in (typing.Union, types.UnionType)


class InputTypeError(TypeError):
    """A value does not fit an input's declared type; the message says what was expected."""


def coerce(value: object, annotation: object) -> object:
    """Return `value` as `annotation`, converting only the safe cases (numeric strings)."""
    if _is_union(annotation):
        options = get_args(annotation)
        for option in options:
            try:
                return coerce(value, option)
            except InputTypeError:
                continue
        if Secret in options and str not in options:
            return coerce(value, Secret)  # raises the message that explains where secrets come from
        raise InputTypeError(f"expected {describe_type(annotation)}, got {_show(value)}")
    if annotation is type(None):
        if value is None:
            return None
        raise InputTypeError(f"expected null, got {_show(value)}")
    if annotation is Secret:
        if isinstance(value, Secret):
            return value
        raise InputTypeError(
            f"expected a secret (from secrets.*), got {_show(value)}; secrets never come from playbook text"
        )
    if get_origin(annotation) is Literal:
        choices = get_args(annotation)
        if value in choices:
            return value
        raise InputTypeError(f"expected {describe_type(annotation)}, got {_show(value)}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    raise InputTypeError(f"expected {describe_type(annotation)}, got {_show(value)}")


def _show(value: object) -> str:
    if isinstance(value, Secret):
        return "a secret"
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value) if len(value) < 40 else repr(value[:37] + "...")
    return f"{type(value).__name__} {value!r}"


def build_params(step_type: StepType, values: Mapping[str, object]) -> object:
    """Coerce rendered values into the step's parameter dataclass."""
    kwargs: dict[str, object] = {}
    problems = []
    for spec in step_type.inputs():
        if spec.name not in values:
            if spec.required:
                problems.append(f"with.{spec.name}: required input is missing")
            continue
        try:
            kwargs[spec.name] = coerce(values[spec.name], spec.annotation)
        except InputTypeError as exc:
            problems.append(f"with.{spec.name}: {exc}")
    if problems:
        raise InputTypeError("; ".join(problems))
    return step_type.params(**kwargs)
