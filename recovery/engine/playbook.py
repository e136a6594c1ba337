"""YAML playbook → a validated `Playbook`, with every problem located by file, line and key path.

A playbook declares its `inputs` (given with `-e NAME=VALUE`), its `secrets` (from
the environment, a file or a prompt, never from the playbook text) and its
`steps`. A step is either one step type (`uses:`) or a choice of routes
(`choose:`, see `Route`): the first route that is possible runs. Validation runs
before anything touches a VM and reports all problems at once, because an
on-call engineer fixing one error per run loses minutes.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recovery.engine import templating
from recovery.engine.catalog import step_types
from recovery.engine.registry import InputTypeError, StepType, coerce
from recovery.errors import PlaybookError, Problem, UsageError
from recovery.safety import readers
from recovery.safety.redact import Secret, masked_url

_ID = re.compile(r"^[a-z][a-z0-9_]*$")
_INPUT_TYPES: dict[str, type] = {"string": str, "integer": int, "number": float, "boolean": bool}
_TOP_KEYS = {"name", "description", "inputs", "secrets", "steps"}
_INPUT_KEYS = {"type", "required", "default", "choices", "description", "sensitive", "env"}
_SECRET_KEYS = {"env", "prompt", "description", "required"}
_STEP_KEYS = {"id", "uses", "name", "with", "when", "timeout", "retry", "always", "cleanup", "probe"}
_CHOOSE_KEYS = {"id", "name", "when", "choose"}
_ROUTE_KEYS = {"id", "name", "when", "skip_reason", "reboots", "steps", "outputs"}
CHOOSE = "choose"
"""What `uses` says for a `choose:` step, in records, reports and plans (no step type has this name)."""
ALLOW_REBOOT = "allow_reboot"
"""The boolean input that lets routes marked `reboots: true` run without asking."""
CHOOSE_OUTPUTS = {"route": "the id of the route that ran", "skipped": "why each route before it was skipped"}
_RETRY_KEYS = {"attempts", "delay", "max_delay"}
_RUN_FIELDS = {"id", "dir"}


@dataclass(frozen=True)
class InputDecl:
    name: str
    type: str
    required: bool
    default: object
    choices: tuple[object, ...]
    description: str
    sensitive: bool = False  # holds a credential (a console token): masked, never saved
    env: str | None = None  # environment variable it may come from, so it stays out of `ps`


@dataclass(frozen=True)
class SecretDecl:
    name: str
    env: str | None
    prompt: str | None
    description: str
    required: bool


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    delay: float = 1.0
    max_delay: float = 15.0


@dataclass(frozen=True)
class StepSpec:
    id: str
    uses: str
    title: str
    params: Mapping[str, object]
    when: str | None
    timeout: float | None
    retry: RetryPolicy | None
    always: bool
    cleanup: tuple[StepSpec, ...]
    line: int | None
    path: str
    probe: bool = False  # in a route: a "not possible" failure here moves on to the next route
    routes: tuple[Route, ...] = ()  # a `choose:` step (uses == CHOOSE): its routes, tried in order

    @property
    def outputs(self) -> tuple[str, ...]:
        """A choose step's outputs: `route`, `skipped` and what its routes declare (null where one does not)."""
        names = dict.fromkeys(CHOOSE_OUTPUTS)
        for route in self.routes:
            names.update(dict.fromkeys(route.outputs))
        return tuple(names)


@dataclass(frozen=True)
class Route:
    """One way to reach the goal of a `choose:` step; the first route that is possible runs.

    A route is skipped, and the next one tried, when its `when` is false (`skip_reason` says
    why in the report), when it reboots and rebooting was neither allowed nor confirmed, when
    the pre-flight finds one of its steps cannot succeed, or when one of its *probe* steps (the
    first step, and the steps right after it marked `probe: true`) fails with an error that
    says the route is not possible (`recovery.engine.routes.not_possible`). A failure anywhere
    else fails the run: the route may have changed the VM, and another route on top of a
    half-done one is not what anyone reviewed.
    """

    id: str
    title: str
    when: str | None
    skip_reason: str
    reboots: bool
    steps: tuple[StepSpec, ...]
    probes: int  # how many leading steps are probes (at least the first)
    outputs: Mapping[str, str]  # name -> template, rendered once the route ran
    line: int | None


@dataclass(frozen=True)
class Playbook:
    path: Path
    name: str
    description: str
    inputs: Mapping[str, InputDecl]
    secrets: Mapping[str, SecretDecl]
    steps: tuple[StepSpec, ...]
    text: str = field(repr=False, default="")

    def all_steps(self) -> list[StepSpec]:
        """Main steps, the steps of each route of a `choose:` and every cleanup step, in declaration order."""
        result = []
        for spec in self.steps:
            result.append(spec)
            result.extend(spec.cleanup)
            for route in spec.routes:
                for inner in route.steps:
                    result.append(inner)
                    result.extend(inner.cleanup)
        return result


# --- YAML with line numbers -------------------------------------------------------------

Position = dict[tuple[object, ...], int]


class _Located:
    """The parsed document plus a map from key path to the line it was written on."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self.lines: Position = {}
        try:
            node = readers.compose_yaml(text, file)
        except readers.YamlError as exc:
            self.problems.append(Problem(file, exc.line, "", exc.reason))
            self.data: object = None
            return
        self.data = self._build(node, ()) if node is not None else None

    def _build(self, node: yaml.Node, path: tuple[object, ...]) -> object:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            result: dict[object, object] = {}
            for key_node, value_node in node.value:
                key = self._scalar(key_node)
                if key in result:
                    self.problems.append(
                        Problem(self.file, key_node.start_mark.line + 1, _path_text((*path, key)), "duplicate key")
                    )
                result[key] = self._build(value_node, (*path, key))
                self.lines[(*path, key)] = key_node.start_mark.line + 1
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self._build(item, (*path, index)) for index, item in enumerate(node.value)]
        return self._scalar(node)

    @staticmethod
    def _scalar(node: yaml.Node) -> object:
        if not isinstance(node, yaml.ScalarNode):
            return str(node.value)
        constructor = yaml.constructor.SafeConstructor()
        return constructor.construct_object(node, deep=True)

    def line(self, path: tuple[object, ...]) -> int | None:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path)


def _path_text(path: Sequence[object]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# --- validation ---------------------------------------------------------------------------


class _Validator:
    def __init__(self, located: _Located, types: Mapping[str, StepType]) -> None:
        self.doc = located
        self.types = types
        self.problems = located.problems

    def problem(self, path: tuple[object, ...], message: str) -> None:
        self.problems.append(Problem(self.doc.file, self.doc.line(path), _path_text(path), message))

    def mapping(self, value: object, path: tuple[object, ...], allowed: set[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(path, f"expected a mapping, got {type(value).__name__}")
            return {}
        for key in value:
            if key not in allowed:
                self.problem((*path, key), f"unknown key (allowed: {', '.join(sorted(allowed))})")
        return {str(k): v for k, v in value.items() if k in allowed}

    def playbook(self, path: Path, text: str) -> Playbook:
        top = self.mapping(self.doc.data, (), _TOP_KEYS)
        if self.doc.data is not None and isinstance(self.doc.data, dict) and "steps" not in top:
            self.problem((), "a playbook needs a 'steps' list")
        inputs = self.inputs(top.get("inputs"))
        secrets = self.secrets(top.get("secrets"))
        steps = self.steps(top.get("steps"), inputs, secrets)
        return Playbook(
            path=path,
            name=str(top.get("name") or path.stem),
            description=str(top.get("description") or ""),
            inputs=inputs,
            secrets=secrets,
            steps=tuple(steps),
            text=text,
        )

    def inputs(self, raw: object) -> dict[str, InputDecl]:
        result = {}
        for name, body in self.mapping(raw, ("inputs",), _anything(raw)).items():
            path: tuple[object, ...] = ("inputs", name)
            spec = self.mapping(body, path, _INPUT_KEYS)
            type_name = str(spec.get("type", "string"))
            if type_name not in _INPUT_TYPES:
                self.problem((*path, "type"), f"unknown type {type_name!r} (known: {', '.join(_INPUT_TYPES)})")
                continue
            choices = tuple(spec.get("choices") or ())
            default = spec.get("default")
            if default is not None:
                try:
                    default = coerce(default, _INPUT_TYPES[type_name])
                except InputTypeError as exc:
                    self.problem((*path, "default"), str(exc))
                if choices and default not in choices:
                    self.problem((*path, "default"), f"{default!r} is not one of the choices {list(choices)}")
            required = bool(spec.get("required", default is None))
            sensitive = spec.get("sensitive", False)
            if not isinstance(sensitive, bool) or (sensitive and type_name != "string"):
                self.problem((*path, "sensitive"), "expected true or false, on a string input")
                sensitive = False
            env = spec.get("env")
            if env is not None and not (isinstance(env, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env)):
                self.problem((*path, "env"), "expected the name of an environment variable, such as MY_TOKEN")
                env = None
            result[name] = InputDecl(
                name, type_name, required, default, choices, str(spec.get("description", "")), sensitive, env
            )
        return result

    def secrets(self, raw: object) -> dict[str, SecretDecl]:
        result = {}
        for name, body in self.mapping(raw, ("secrets",), _anything(raw)).items():
            spec = self.mapping(body, ("secrets", name), _SECRET_KEYS)
            result[name] = SecretDecl(
                name=name,
                env=spec.get("env"),
                prompt=spec.get("prompt"),
                description=str(spec.get("description", "")),
                required=bool(spec.get("required", True)),
            )
        return result

    def steps(self, raw: object, inputs: Mapping[str, InputDecl], secrets: Mapping[str, SecretDecl]) -> list[StepSpec]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.problem(("steps",), "expected a list of steps")
            return []
        seen: dict[str, _Known | None] = {}
        result = []
        for index, body in enumerate(raw):
            path: tuple[object, ...] = ("steps", index)
            if isinstance(body, dict) and CHOOSE in body:
                spec = self.choose(body, path, seen, inputs, secrets)
            else:
                spec = self.step(body, path, seen, inputs, secrets, parent=None)
            if spec is not None:
                result.append(spec)
        return result

    def step(
        self,
        body: object,
        path: tuple[object, ...],
        seen: dict[str, _Known | None],
        inputs: Mapping[str, InputDecl],
        secrets: Mapping[str, SecretDecl],
        parent: str | None,
        *,
        in_route: bool = False,
    ) -> StepSpec | None:
        if isinstance(body, dict) and CHOOSE in body:
            where = "a route" if in_route else "a cleanup step"
            self.problem((*path, CHOOSE), f"{where} cannot hold a choose: put the choice at the top level of steps")
            return None
        spec = self.mapping(body, path, _STEP_KEYS)
        if not spec:
            if body is not None and isinstance(body, dict):
                self.problem(path, "a step needs 'id' and 'uses'")
            return None
        step_id = spec.get("id")
        if not isinstance(step_id, str) or not _ID.match(step_id):
            self.problem((*path, "id"), "each step needs an id of lowercase letters, digits and '_'")
            step_id = f"#{_path_text(path)}"
        elif step_id in seen:
            self.problem((*path, "id"), f"step id {step_id!r} is used twice")
        uses = spec.get("uses")
        step_type = self.types.get(uses) if isinstance(uses, str) else None
        if step_type is None:
            close = difflib.get_close_matches(str(uses), list(self.types), n=3)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            self.problem((*path, "uses"), f"unknown step type {uses!r} ({hint}`recovery steps` lists them all)")
        context = _Scope(inputs, secrets, dict(seen))
        self.params(spec.get("with"), (*path, "with"), step_type, context)
        when = spec.get("when")
        if when is not None and not isinstance(when, (str, bool)):
            self.problem((*path, "when"), "expected a template such as \"{{ inputs.publish == 'http' }}\"")
        elif isinstance(when, str):
            condition = self.template(when, (*path, "when"), context)
            if condition is not None and not condition.is_single_expression:
                self.problem((*path, "when"), _bare_when(when, condition))
        timeout = self.number(spec.get("timeout"), (*path, "timeout"))
        retry = self.retry(spec.get("retry"), (*path, "retry"), step_type)
        always = spec.get("always", False)
        if not isinstance(always, bool):
            self.problem((*path, "always"), f"expected true or false, got {always!r}")
            always = False
        if always and in_route:
            self.problem((*path, "always"), "a step of a route cannot be `always`: put it after the choose")
        probe = spec.get("probe", False)
        if not isinstance(probe, bool):
            self.problem((*path, "probe"), f"expected true or false, got {probe!r}")
            probe = False
        elif probe and not in_route:
            self.problem((*path, "probe"), "only the steps of a route (under choose:) can be probes")
            probe = False
        seen[step_id] = (step_type.name, tuple(step_type.outputs)) if step_type else None
        cleanup = []
        raw_cleanup = spec.get("cleanup")
        if raw_cleanup is not None and not isinstance(raw_cleanup, list):
            self.problem((*path, "cleanup"), "expected a list of steps")
        elif raw_cleanup:
            if parent is not None:
                self.problem((*path, "cleanup"), "cleanup steps cannot have cleanup steps of their own")
            for index, child in enumerate(raw_cleanup):
                child_spec = self.step(child, (*path, "cleanup", index), seen, inputs, secrets, parent=step_id)
                if child_spec is not None:
                    cleanup.append(child_spec)
        return StepSpec(
            id=step_id,
            uses=str(uses),
            title=str(spec.get("name") or (step_type.summary if step_type else uses)),
            params=dict(spec.get("with") or {}) if isinstance(spec.get("with"), dict) else {},
            when=when if isinstance(when, str) else (None if when in (None, True) else "{{ false }}"),
            timeout=timeout,
            retry=retry,
            always=always,
            cleanup=tuple(cleanup),
            line=self.doc.line(path),
            path=_path_text(path),
            probe=probe,
        )

    def choose(
        self,
        body: dict[object, object],
        path: tuple[object, ...],
        seen: dict[str, _Known | None],
        inputs: Mapping[str, InputDecl],
        secrets: Mapping[str, SecretDecl],
    ) -> StepSpec | None:
        """A `choose:` step: routes tried in order until one is possible (see `Route`)."""
        spec = self.mapping(body, path, _CHOOSE_KEYS)
        step_id = spec.get("id")
        if not isinstance(step_id, str) or not _ID.match(step_id):
            self.problem((*path, "id"), "each step needs an id of lowercase letters, digits and '_'")
            step_id = f"#{_path_text(path)}"
        elif step_id in seen:
            self.problem((*path, "id"), f"step id {step_id!r} is used twice")
        when = self.condition(spec.get("when"), (*path, "when"), _Scope(inputs, secrets, dict(seen)))
        raw = spec.get(CHOOSE)
        if not isinstance(raw, list) or len(raw) < 2:
            self.problem((*path, CHOOSE), "expected a list of at least two routes, each with an id and steps")
            raw = raw if isinstance(raw, list) else []
        before = dict(seen)
        routes: list[Route] = []
        for index, route_body in enumerate(raw):
            route_seen = dict(before)
            route = self.route(route_body, (*path, CHOOSE, index), route_seen, inputs, secrets)
            for step_key, known in route_seen.items():
                if step_key in seen and step_key not in before:
                    self.problem((*path, CHOOSE, index), f"step id {step_key!r} is used twice")
                seen[step_key] = known
            if route is None:
                continue
            if any(route.id == other.id for other in routes):
                self.problem((*path, CHOOSE, index, "id"), f"route id {route.id!r} is used twice")
            routes.append(route)
        if step_id in seen and step_id not in before:
            self.problem((*path, "id"), f"step id {step_id!r} is used twice (by a step of one of its routes)")
        choice = StepSpec(
            id=step_id, uses=CHOOSE, title=str(spec.get("name") or "choose a route"), params={}, when=when,
            timeout=None, retry=None, always=False, cleanup=(), line=self.doc.line(path), path=_path_text(path),
            routes=tuple(routes),
        )
        seen[step_id] = (CHOOSE, choice.outputs)
        return choice

    def route(
        self,
        body: object,
        path: tuple[object, ...],
        seen: dict[str, _Known | None],
        inputs: Mapping[str, InputDecl],
        secrets: Mapping[str, SecretDecl],
    ) -> Route | None:
        spec = self.mapping(body, path, _ROUTE_KEYS)
        if not spec:
            self.problem(path, "a route needs an 'id' and 'steps'")
            return None
        route_id = spec.get("id")
        if not isinstance(route_id, str) or not _ID.match(route_id):
            self.problem((*path, "id"), "each route needs an id of lowercase letters, digits and '_'")
            route_id = f"#{_path_text(path)}"
        when = self.condition(spec.get("when"), (*path, "when"), _Scope(inputs, secrets, dict(seen)))
        skip_reason = spec.get("skip_reason", "")
        if not isinstance(skip_reason, str):
            self.problem((*path, "skip_reason"), "expected the reason in words, said when `when` is false")
            skip_reason = ""
        reboots = spec.get("reboots", False)
        if not isinstance(reboots, bool):
            self.problem((*path, "reboots"), f"expected true or false, got {reboots!r}")
            reboots = False
        allow = inputs.get(ALLOW_REBOOT)
        if reboots and (allow is None or allow.type != "boolean"):
            self.problem((*path, "reboots"), f"a route that reboots needs a boolean input {ALLOW_REBOOT!r} "
                         "(false by default): without it, the route is asked about on a terminal, else skipped")
        steps: list[StepSpec] = []
        raw_steps = spec.get("steps")
        if not isinstance(raw_steps, list) or not raw_steps:
            self.problem((*path, "steps"), "expected a list of steps")
            raw_steps = []
        probes = 1
        for index, child in enumerate(raw_steps):
            child_spec = self.step(child, (*path, "steps", index), seen, inputs, secrets, None, in_route=True)
            if child_spec is None:
                continue
            if child_spec.probe and index > probes:
                first = next((s.id for s in steps[1:] if not s.probe), "?")
                self.problem((*path, "steps", index, "probe"), "a probe must come before every step that may "
                             f"change the VM, but step {first} before it is not a probe")
            elif child_spec.probe and index == probes:
                probes += 1
            steps.append(child_spec)
        outputs: dict[str, str] = {}
        scope = _Scope(inputs, secrets, dict(seen))
        raw_outputs = spec.get("outputs")
        for name, value in self.mapping(raw_outputs, (*path, "outputs"), _anything(raw_outputs)).items():
            if not _ID.match(name) or name in CHOOSE_OUTPUTS:
                self.problem((*path, "outputs", name), "an output name is lowercase letters, digits and '_', "
                             f"and not {' or '.join(CHOOSE_OUTPUTS)}")
            elif not isinstance(value, str):
                self.problem((*path, "outputs", name), "expected a template such as \"{{ steps.ID.outputs.NAME }}\"")
            elif self.template(value, (*path, "outputs", name), scope) is not None:
                outputs[name] = value
        return Route(
            id=route_id, title=str(spec.get("name") or route_id), when=when,
            skip_reason=skip_reason or (f"its condition {when} is false" if when else ""), reboots=reboots,
            steps=tuple(steps), probes=min(probes, len(steps)), outputs=outputs, line=self.doc.line(path),
        )

    def condition(self, when: object, path: tuple[object, ...], scope: _Scope) -> str | None:
        """A `when` of a choose or a route: one `{{ }}` expression, or a constant true/false."""
        if when is None or when is True:
            return None
        if when is False:
            return "{{ false }}"
        if not isinstance(when, str):
            self.problem(path, "expected a template such as \"{{ inputs.agent }}\"")
            return None
        condition = self.template(when, path, scope)
        if condition is not None and not condition.is_single_expression:
            self.problem(path, _bare_when(when, condition))
        return when

    def params(self, raw: object, path: tuple[object, ...], step_type: StepType | None, scope: _Scope) -> None:
        if step_type is None:
            return
        declared = {spec.name: spec for spec in step_type.inputs()}
        given = self.mapping(raw, path, set(declared))
        for name, spec in declared.items():
            if spec.required and name not in given:
                where = path if raw is not None else path[:-1]
                self.problem(where, f"{step_type.name} needs input '{name}' ({spec.description})")
        for name, value in given.items():
            self.value(value, (*path, name), declared[name].annotation, scope)

    def value(self, value: object, path: tuple[object, ...], annotation: object, scope: _Scope) -> None:
        if isinstance(value, str):
            template = self.template(value, path, scope)
            if template is None or not template.is_constant:
                return  # checked again after rendering, when the value is known
        try:
            coerce(value, annotation)
        except InputTypeError as exc:
            self.problem(path, str(exc))

    def template(self, text: str, path: tuple[object, ...], scope: _Scope) -> templating.Template | None:
        try:
            template = templating.parse(text)
        except templating.TemplateSyntaxError as exc:
            self.problem(path, f"bad template: {exc}")
            return None
        for ref in template.references():
            message = scope.check(ref)
            if message:
                self.problem(path, message)
        return template

    def number(self, value: object, path: tuple[object, ...]) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            self.problem(path, f"expected a number of seconds above 0, got {value!r}")
            return None
        return float(value)

    def retry(self, value: object, path: tuple[object, ...], step_type: StepType | None) -> RetryPolicy | None:
        if value is None or value is False:
            return None
        if step_type is not None and not step_type.retryable:
            self.problem(path, f"{step_type.name} is not safe to retry (typing into a console twice is not)")
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                self.problem(path, "expected at least 1 attempt")
                return None
            return RetryPolicy(attempts=value)
        spec = self.mapping(value, path, _RETRY_KEYS)
        attempts = spec.get("attempts", 3)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            self.problem((*path, "attempts"), f"expected a whole number of at least 1, got {attempts!r}")
            attempts = 3
        delay = self.number(spec.get("delay", 1.0), (*path, "delay")) or 1.0
        max_delay = self.number(spec.get("max_delay", 15.0), (*path, "max_delay")) or 15.0
        return RetryPolicy(attempts=attempts, delay=delay, max_delay=max_delay)


def _bare_when(when: str, condition: templating.Template) -> str:
    """Why a `when` that is not one `{{ }}` is refused: as text, it would always be true."""
    if condition.is_constant:
        return (
            f"{when.strip()!r} is text, and text is always true: write a condition inside braces, "
            f"\"{{{{ {when.strip()} }}}}\" (this is not Ansible, where a bare `when:` is an expression)"
        )
    return "text around '{{ }}' makes a string, which is always true: put the whole condition inside one '{{ }}'"


_Known = tuple[str, tuple[str, ...]]
"""An earlier step as templates may refer to it: its type's name and its outputs."""


def _anything(raw: object) -> set[str]:
    return {str(k) for k in raw} if isinstance(raw, dict) else set()


@dataclass
class _Scope:
    """What a template at one place in the playbook may refer to."""

    inputs: Mapping[str, InputDecl]
    secrets: Mapping[str, SecretDecl]
    earlier: Mapping[str, _Known | None]

    def check(self, ref: templating.Ref) -> str | None:
        head, *rest = ref.parts
        if head == "inputs":
            if len(rest) != 1 or rest[0] not in self.inputs:
                return f"{ref} is not a declared input (declared: {', '.join(self.inputs) or 'none'})"
        elif head == "secrets":
            if len(rest) != 1 or rest[0] not in self.secrets:
                return f"{ref} is not a declared secret (declared: {', '.join(self.secrets) or 'none'})"
        elif head == "run":
            if len(rest) != 1 or rest[0] not in _RUN_FIELDS:
                return f"{ref} is not known (run has: {', '.join(sorted(_RUN_FIELDS))})"
        elif head == "steps":
            return self._check_step(ref, rest)
        else:
            return f"{ref} refers to nothing (use inputs.*, secrets.*, steps.ID.outputs.* or run.*)"
        return None

    def _check_step(self, ref: templating.Ref, rest: list[str]) -> str | None:
        if len(rest) != 3 or rest[1] != "outputs":
            return f"{ref}: step references look like steps.ID.outputs.NAME"
        step_id, _, output = rest
        if step_id not in self.earlier:
            return f"{ref} refers to step {step_id!r}, which does not exist or comes later"
        known = self.earlier[step_id]
        if known is not None and output not in known[1]:
            return f"{ref}: {known[0]} has no output {output!r} (it has: {', '.join(known[1])})"
        return None


def load_playbook(path: str | Path) -> Playbook:
    """Read and validate a playbook.

    Raises:
        PlaybookError: with every problem found, each naming file, line and key path.
        readers.InputFileError: the file cannot be read (missing, a device, too big, not UTF-8).
    """
    path = Path(path)
    text = readers.read_text(path, what="playbook", limit=readers.TEXT_LIMIT)
    return parse_playbook(text, path)


def parse_playbook(text: str, path: Path) -> Playbook:
    located = _Located(path.name, text)
    validator = _Validator(located, step_types())
    playbook = validator.playbook(path, text) if not located.problems or located.data is not None else None
    if located.data is None and not located.problems:
        validator.problem((), "the playbook is empty")
    if validator.problems or playbook is None:
        raise PlaybookError(validator.problems)
    return playbook


def resolve_inputs(playbook: Playbook, given: Mapping[str, str]) -> dict[str, object]:
    """Inputs from `-e NAME=VALUE`, typed and checked against the playbook's declarations.

    Raises:
        UsageError: listing every unknown, missing or mistyped input at once.
    """
    problems = []
    values: dict[str, object] = {}
    for name in given:
        if name not in playbook.inputs:
            known = ", ".join(playbook.inputs)
            close = difflib.get_close_matches(name, list(playbook.inputs), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            problems.append(f"-e {name}: {playbook.path.name} has no input {name!r} ({hint}inputs: {known})")
    for name, decl in playbook.inputs.items():
        if name not in given:
            if decl.required:
                problems.append(f"-e {name}=...: required input is missing ({decl.description or decl.type})")
            values[name] = decl.default
            continue
        try:
            value = coerce(given[name], _INPUT_TYPES[decl.type])
        except InputTypeError as exc:
            problems.append(f"-e {name}: {exc}")
            continue
        if decl.choices and value not in decl.choices:
            problems.append(f"-e {name}: {value!r} is not one of {', '.join(map(str, decl.choices))}")
        values[name] = Secret(str(value), masked_url(str(value))) if decl.sensitive else value
    if problems:
        raise UsageError("invalid inputs:\n" + "\n".join(f"  {p}" for p in problems))
    return values
