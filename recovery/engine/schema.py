"""A JSON Schema (draft 2020-12) of playbooks, for editors: `recovery steps --schema`.

With the yaml-language-server (VS Code's YAML extension, neovim, Helix), a playbook
that starts with `# yaml-language-server: $schema=recovery-playbook.schema.json`
gets completion and checks as it is typed: the top-level keys, the declarations of
inputs and secrets, each step's keys, `uses` from the installed step types, and
the `with:` parameters of the step type a step uses, with their descriptions.

It is made from the same declarations as `recovery.engine.playbook`'s validation and
`recovery steps` (the registry), so it cannot drift from them. It is a first line
of help, not the validator: templates (`"{{ inputs.port }}"`) are accepted wherever
a value is, and whether a template refers to something that exists is for
`recovery validate` to say.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, get_args, get_origin

from recovery.engine.registry import InputSpec, StepType
from recovery.safety.redact import Secret

__all__ = ["SCHEMA", "playbook_schema"]

SCHEMA = 1
"""Version of the schema document (its `schema` key), as in every JSON document the CLI prints."""

_TEMPLATE = {"type": "string", "pattern": r"\{\{", "description": "a template: {{ inputs.NAME }}, {{ secrets.NAME }}, "
             "{{ steps.ID.outputs.NAME }} or {{ run.id }}"}
_SECONDS = {"type": "number", "exclusiveMinimum": 0}


def playbook_schema(step_types: Mapping[str, StepType]) -> dict[str, Any]:
    """The schema of a playbook that may use `step_types` (`recovery.engine.catalog.step_types()`)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "schema": SCHEMA,
        "title": "recovery playbook",
        "description": "A recovery playbook: inputs (-e NAME=VALUE), secrets (never in the playbook text) and steps.",
        "type": "object",
        "required": ["steps"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "inputs": {"type": ["object", "null"], "additionalProperties": {"$ref": "#/$defs/input"}},
            "secrets": {"type": ["object", "null"], "additionalProperties": {"$ref": "#/$defs/secret"}},
            "steps": {"type": ["array", "null"],
                      # if/then/else rather than anyOf: an editor then says what is wrong in the step itself
                      "items": {"if": {"type": "object", "required": ["choose"]}, "then": {"$ref": "#/$defs/choose"},
                                "else": {"$ref": "#/$defs/step"}}},
        },
        "$defs": {"input": _INPUT, "secret": _SECRET, "step": _step(step_types), "choose": _CHOOSE, "route": _ROUTE},
    }


_INPUT = {
    "description": "an input, given with -e NAME=VALUE",
    "type": ["object", "null"],
    "additionalProperties": False,
    "properties": {
        "type": {"enum": ["string", "integer", "number", "boolean"], "default": "string"},
        "required": {"type": "boolean", "description": "default: true when there is no default"},
        "default": {"type": ["string", "integer", "number", "boolean", "null"]},
        "choices": {"type": "array"},
        "description": {"type": "string"},
        "sensitive": {"type": "boolean", "description": "a credential (a console token): masked, never saved"},
        "env": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
                "description": "environment variable the input may come from, to keep it out of `ps`"},
    },
}

_SECRET = {
    "description": "a secret: from --secret NAME=@FILE, its environment variable, or a prompt",
    "type": ["object", "null"],
    "additionalProperties": False,
    "properties": {
        "env": {"type": "string"},
        "prompt": {"type": "string", "description": "asked for on a terminal when no other source gives it"},
        "description": {"type": "string"},
        "required": {"type": "boolean", "default": True},
    },
}


_ID = {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"}  # a step or route id
_CONDITION = {"type": ["string", "boolean"], "description": "a condition: \"{{ inputs.agent }}\""}

_CHOOSE = {
    "description": "routes tried in order: the first that is possible runs (`recovery.engine.playbook.Route`)",
    "type": "object",
    "required": ["id", "choose"],
    "additionalProperties": False,
    "properties": {
        "id": _ID,
        "name": {"type": "string"},
        "when": _CONDITION,
        "choose": {"type": "array", "minItems": 2, "items": {"$ref": "#/$defs/route"}},
    },
}

_ROUTE = {
    "description": "one way to the goal; skipped when `when` is false, when it reboots and that is not allowed, "
                   "or when a probe step finds it not possible before it changed anything",
    "type": "object",
    "required": ["id", "steps"],
    "additionalProperties": False,
    "properties": {
        "id": _ID,
        "name": {"type": "string"},
        "when": _CONDITION,
        "skip_reason": {"type": "string", "description": "said in the report when `when` is false"},
        "reboots": {"type": "boolean", "description": "asked about on a terminal unless -e allow_reboot=true"},
        "steps": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/step"}},
        "outputs": {"type": "object", "additionalProperties": _TEMPLATE,
                    "description": "values later steps read as steps.CHOOSE_ID.outputs.NAME"},
    },
}


def _step(step_types: Mapping[str, StepType]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["id", "uses"],
        "additionalProperties": False,
        "properties": {
            "id": _ID,
            "uses": {"enum": list(step_types), "description": "the step type (`recovery steps` lists them)"},
            "name": {"type": "string"},
            "with": {"type": ["object", "null"]},
            "when": {"type": ["string", "boolean"], "description": "a condition: \"{{ inputs.publish == 'http' }}\""},
            "timeout": {**_SECONDS, "description": "seconds for the whole step"},
            "retry": {
                "anyOf": [
                    {"type": "integer", "minimum": 1},
                    {"const": False},
                    {"type": "null"},
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "attempts": {"type": "integer", "minimum": 1},
                            "delay": _SECONDS,
                            "max_delay": _SECONDS,
                        },
                    },
                ],
                "description": "only for retryable step types",
            },
            "always": {"type": "boolean", "description": "run whatever happened, after the cleanup"},
            "probe": {"type": "boolean", "description": "in a route, after its first step: a 'not possible' "
                      "failure here still moves on to the next route"},
            "cleanup": {"type": ["array", "null"], "items": {"$ref": "#/$defs/step"}},
        },
        "allOf": [_parameters(step_type) for step_type in step_types.values()],
    }


def _parameters(step_type: StepType) -> dict[str, Any]:
    """`if uses is this type, then with: holds its parameters`: the editor completes them."""
    specs = step_type.inputs()
    required = [spec.name for spec in specs if spec.required]
    with_: dict[str, Any] = {
        "type": "object" if required else ["object", "null"],
        "additionalProperties": False,
        "properties": {spec.name: _parameter(spec) for spec in specs},
    }
    if required:
        with_["required"] = required
    then: dict[str, Any] = {"properties": {"with": with_}}
    if required:
        then["required"] = ["with"]
    return {"if": {"properties": {"uses": {"const": step_type.name}}, "required": ["uses"]}, "then": then}


def _parameter(spec: InputSpec) -> dict[str, Any]:
    schema: dict[str, Any] = {"anyOf": [_type(spec.annotation), _TEMPLATE], "description": spec.description}
    if not spec.required and isinstance(spec.default, (str, int, float, bool)):
        schema["default"] = spec.default
    return schema


def _type(annotation: object) -> dict[str, Any]:
    if annotation is Secret:
        return _TEMPLATE  # a secret comes from secrets.*, never from playbook text
    if get_origin(annotation) is Literal:
        return {"enum": list(get_args(annotation))}
    if get_origin(annotation) in (typing.Union, types.UnionType):
        return {"anyOf": [_type(option) for option in get_args(annotation)]}
    names: dict[object, str] = {str: "string", bool: "boolean", int: "integer", float: "number", type(None): "null"}
    if annotation in names:
        return {"type": names[annotation]}
    return {}  # a type this schema does not know: anything, `recovery validate` checks it
