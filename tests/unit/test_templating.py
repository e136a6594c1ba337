"""The template language: references, literals, operators, and secrets that stay secret."""

from __future__ import annotations

import pytest

from recovery.engine import templating
from recovery.safety.redact import Secret

NAMESPACE = {
    "inputs": {"user": "ubuntu", "port": 22, "publish": "http", "empty": "", "flag": False},
    "secrets": {"password": Secret("hunter2-long", "<password>")},
    "steps": {"key": {"outputs": {"public_key": "ssh-ed25519 AAAA", "url": None}}},
}


def render(text: str) -> object:
    return templating.render(templating.parse(text), NAMESPACE)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ inputs.port }}", 22),
        ("port {{ inputs.port }}", "port 22"),
        ("{{ inputs.publish == 'http' }}", True),
        ("{{ inputs.publish != 'http' }}", False),
        ("{{ not inputs.flag }}", True),
        ("{{ inputs.empty or 'fallback' }}", "fallback"),
        ("{{ steps.key.outputs.url or null }}", None),
        ("{{ inputs.user == 'ubuntu' and inputs.port == 22 }}", True),
        ("{{ (inputs.flag or inputs.user) == 'ubuntu' }}", True),
        ("plain text", "plain text"),
        ('{{ "double" }}', "double"),
        ("{{ 1.5 }}", 1.5),
    ],
)
def test_expressions(text: str, expected: object) -> None:
    assert render(text) == expected


def test_a_lone_secret_stays_a_secret() -> None:
    value = render("{{ secrets.password }}")
    assert isinstance(value, Secret)
    assert value.reveal() == "hunter2-long"


def test_text_around_a_secret_makes_a_masked_secret() -> None:
    value = render("pass={{ secrets.password }};")
    assert isinstance(value, Secret)
    assert str(value) == "pass=***;"
    assert value.reveal() == "pass=hunter2-long;"


def test_comparing_a_secret_does_not_show_it() -> None:
    assert render("{{ secrets.password == 'hunter2-long' }}") is True


@pytest.mark.parametrize(
    "text",
    ["{{ inputs.user.__class__ }}", "{{ nothing.here }}", "{{ steps.key.outputs.missing }}"],
)
def test_only_mappings_are_reachable(text: str) -> None:
    with pytest.raises(templating.UndefinedReference):
        render(text)


@pytest.mark.parametrize(
    "text",
    [
        "{{ __import__('os') }}",
        "{{ inputs.user[0] }}",
        "{{ inputs.user + 'x' }}",
        "{{ }}",
        "{{ inputs.user ",
        "{{ (inputs.user }}",
        "{{ inputs.user inputs.port }}",
    ],
)
def test_anything_but_the_small_language_is_a_syntax_error(text: str) -> None:
    with pytest.raises(templating.TemplateSyntaxError):
        templating.parse(text)


def test_an_empty_value_inside_text_is_an_error_not_the_word_none() -> None:
    with pytest.raises(templating.UndefinedReference, match="empty"):
        render("url={{ steps.key.outputs.url }}")


def test_references_are_listed_for_validation() -> None:
    template = templating.parse("{{ inputs.a or steps.b.outputs.c }} and {{ not run.id }}")
    assert [str(r) for r in template.references()] == ["inputs.a", "steps.b.outputs.c", "run.id"]
