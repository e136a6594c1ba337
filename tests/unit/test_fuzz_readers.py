"""Any input to the readers and the template engine ends in a result or one of our errors, quickly.

Property-based (hypothesis): arbitrary text, YAML-looking text built from YAML's own punctuation,
and arbitrary structures dumped as YAML, through the playbook, config and inventory readers and
through `templating.parse` and `render`. The examples pinned below are what these properties
found, or what they would need far more examples to find, kept as plain tests.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recovery.audit.inventory import HostDefaults, parse_inventory
from recovery.engine import templating
from recovery.engine.config import load_config
from recovery.engine.playbook import Playbook, parse_playbook
from recovery.errors import ConfigError, PlaybookError, UsageError
from recovery.safety import readers
from recovery.safety.redact import Secret

# The deadline is loose (a busy 2-core machine): the point is "no hang, no exponential blow-up".
# No example database in a shared tree; a failure prints the blob that reproduces it.
FUZZ = settings(
    max_examples=100,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
    print_blob=True,
)

YAML_PIECES = [
    "\n", "\n  ", "\n    ", " ", ": ", "- ", "-", ":", "[", "]", "{", "}", ",", "&a ", "*a", "&b ", "*b", "!!str ",
    "!!int ", "!!bool ", "!!null ", "!!timestamp ", "!!float ", "!!map ", "!!binary ", "!!omap ",
    "!foo ", "? ", "|", ">", "'", '"', "#", "---", "...", "<<: ", "=", "~", "null", "true", "1", "-2.5", "0x1F",
    "2024-13-45", "1:20", "%YAML 1.1", "\t", "\\", "\x00", "\ufeff", "é", "steps", "id", "uses", "with", "when",
    "keys.generate", "inputs", "secrets", "{{ inputs.x }}", "{{", "}}", "{%", "hosts", "name", "host", "port",
    "defaults", "key", "user", "host_key", "console", "login_timeout", "journal", "dir",
]  # fmt: skip
yaml_ish = st.lists(st.sampled_from(YAML_PIECES), max_size=60).map("".join)
# Plain scalars that only fail when something constructs them, in the shapes our files have:
# safe_dump would quote every one of them, so the structures below never produce these.
HOSTILE_VALUES = [
    "2024-13-45", "2001-12-14t21:59:43.10+25:00", "9" * 5000, "=", "<<", "!foo x", "!!binary xx",
    "!!python/object:os.system x", "&a [*a]", "*a", "&a x", "*undefined", "!!set {a}", "1:20:30", ".nan", "~", "",
    "!!bool abc", "!!timestamp x", "!!int ''", "!!float -", "!!map x", "!!str [1]", "!!null x", "0000-01-01",
    "keys.generate", "key", "ops", "{{ inputs.x }}", "inputs.x == 'y'", "{% if x %}", "[1, *a]", "{a: *a}",
]  # fmt: skip
LINE_KEYS = [
    "name", "steps", "  - id", "    uses", "    with", "      comment", "    when", "inputs", "  x", "    type",
    "hosts", "  - name", "    host", "    port", "    key", "defaults", "  user", "console", "  login_timeout", "<<",
]  # fmt: skip
hostile_lines = st.lists(st.tuples(st.sampled_from(LINE_KEYS), st.sampled_from(HOSTILE_VALUES)), max_size=12).map(
    lambda pairs: "".join(f"{key}: {value}\n" for key, value in pairs)
)
any_text = st.one_of(st.text(max_size=300), yaml_ish, hostile_lines)

TEMPLATES = ["{{ inputs.user }}", "{{ steps.key.outputs.public_key }}", "keys.generate", "key", "{% x %}"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30),
    st.sampled_from(TEMPLATES),
)
KEYS = ["steps", "id", "uses", "with", "when", "inputs", "type", "hosts", "name"]
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=10))
structures = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5), max_leaves=25
)
STEP_KEYS = ["id", "uses", "with", "when", "timeout", "retry", "always", "cleanup"]
playbookish = st.fixed_dictionaries(
    {"steps": st.lists(st.dictionaries(st.sampled_from(STEP_KEYS), structures, max_size=6), max_size=4)},
    optional={"inputs": st.dictionaries(st.text(max_size=8), structures, max_size=3), "name": scalars},
)


def _outcome(call: Callable[[], object], errors: type[Exception] | tuple[type[Exception], ...]) -> object:
    """What `call` returns, or the exception it raised if it is one of `errors`; anything else fails the test."""
    try:
        return call()
    except errors as exc:
        return exc


def _dump(data: object) -> str:
    return yaml.safe_dump(data, allow_unicode=True)


def _playbook(text: str) -> None:
    outcome = _outcome(lambda: parse_playbook(text, Path("fuzz.yaml")), PlaybookError)
    if isinstance(outcome, PlaybookError):
        assert all(problem.file == "fuzz.yaml" for problem in outcome.problems)
    else:
        assert isinstance(outcome, Playbook)


@FUZZ
@given(any_text)
def test_any_text_is_a_playbook_or_a_playbook_error(text: str) -> None:
    _playbook(text)


@settings(FUZZ, max_examples=60)  # each example validates a whole playbook: the slowest property here
@given(st.one_of(structures, playbookish))
def test_any_yaml_structure_is_a_playbook_or_a_playbook_error(data: object) -> None:
    _playbook(_dump(data))


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-config")


@FUZZ
@given(st.one_of(any_text, structures.map(_dump)))
def test_any_config_is_a_config_or_a_config_error(config_dir: Path, text: str) -> None:
    path = config_dir / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    outcome = _outcome(lambda: load_config(path, env={}), ConfigError)
    assert not isinstance(outcome, ConfigError) or "config.yaml" in str(outcome)


HOST_KEYS = ["name", "host", "port", "user", "key", "host_key"]
inventoryish = st.fixed_dictionaries(
    {"hosts": st.lists(st.dictionaries(st.sampled_from(HOST_KEYS), scalars, max_size=6), max_size=4)},
    optional={"defaults": st.dictionaries(st.sampled_from(HOST_KEYS), scalars, max_size=4)},
)


@FUZZ
@given(st.one_of(any_text, structures.map(_dump), inventoryish.map(_dump)))
def test_any_inventory_is_hosts_or_a_usage_error(text: str) -> None:
    fallback = HostDefaults("ops", (Path("k"),))
    base = Path("/nonexistent")
    outcome = _outcome(lambda: parse_inventory(text, "fuzz.yaml", base=base, fallback=fallback), UsageError)
    if isinstance(outcome, UsageError):
        assert "fuzz.yaml" in str(outcome)
    else:
        assert isinstance(outcome, list)
        assert all(host.name for host in outcome)


@FUZZ
@given(any_text, st.integers(min_value=1, max_value=60), st.integers(min_value=1, max_value=8))
def test_a_composed_tree_stays_within_its_budget(text: str, max_nodes: int, max_depth: int) -> None:
    """What compose_yaml promises the code that walks its tree with aliases expanded."""
    node = _outcome(
        lambda: readers.compose_yaml(text, "f.yaml", max_nodes=max_nodes, max_depth=max_depth), readers.YamlError
    )
    if isinstance(node, readers.YamlError):
        assert node.file == "f.yaml"
        return
    count = 0

    def walk(node: yaml.Node, depth: int) -> None:
        nonlocal count
        count += 1
        assert count <= max_nodes
        assert depth <= max_depth
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                walk(key, depth + 1)
                walk(value, depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item, depth + 1)
        else:
            yaml.constructor.SafeConstructor().construct_object(node)

    if node is not None:
        assert isinstance(node, yaml.Node)
        walk(node, 1)


@FUZZ
@given(st.binary(max_size=200))
def test_any_bytes_are_text_or_an_input_file_error(config_dir: Path, data: bytes) -> None:
    path = config_dir / "bytes"
    path.write_bytes(data)
    text = _outcome(lambda: readers.read_text(path, what="secret", limit=100), readers.InputFileError)
    if isinstance(text, readers.InputFileError):
        assert str(path) in str(text)
    else:
        assert isinstance(text, str)
        assert text.encode() in (data, data.removeprefix(b"\xef\xbb\xbf"))


# --- templates ------------------------------------------------------------------------------

TEMPLATE_PIECES = [
    "{{", "}}", "{{ ", " }}", "{%", "%}", "{#", "#}", "{", "}", " ", "(", ")", "==", "!=", "=", "and", " and ",
    " or ", "not ", "true", "false", "null", "'x'", "'", '"ops"', "42", "-1.5", "9" * 30, ".", "inputs.user",
    "inputs.n", "inputs.flag", "inputs.none", "inputs.pending", "secrets.pw", "steps.key.outputs.path", "run.id",
    "missing", "inputs", "text ", "\n",
]  # fmt: skip
templateish = st.lists(st.sampled_from(TEMPLATE_PIECES), max_size=40).map("".join)
NAMESPACE = {
    "inputs": {
        "user": "ops",
        "n": 3,
        "flag": True,
        "none": None,
        "pending": templating.Unknown("<steps.find.outputs.ssh_host>"),
    },
    "secrets": {"pw": Secret("hunter2", "<pw>")},
    "steps": {"key": {"outputs": {"path": "/k"}}},
    "run": {"id": "r1"},
}


@FUZZ
@given(st.one_of(st.text(max_size=200), templateish))
def test_any_string_parses_and_renders_or_raises_a_template_error(source: str) -> None:
    try:
        template = templating.parse(source)
    except templating.TemplateSyntaxError:
        return
    list(template.references())
    with contextlib.suppress(templating.UndefinedReference):
        templating.render(template, NAMESPACE)


# --- what the properties found, or would need many more examples to find -----------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ " + "(" * 60 + "x" + ")" * 60 + " }}", "nested deeper than"),
        ("{{ " + "not " * 60 + "x }}", "nested deeper than"),
        ("{{ " + " or ".join(["x"] * 300) + " }}", "longer than 200 tokens"),
        ("{{ " + "9" * 5000 + " }}", "number too long"),
        ("{% if x %}y{% endif %}", "this is not Jinja"),
        ("{# note #}", "this is not Jinja"),
    ],
)
def test_templates_that_would_exhaust_the_stack_or_hide_jinja_are_refused(source: str, message: str) -> None:
    with pytest.raises(templating.TemplateSyntaxError, match=message):
        templating.parse(source)


def test_printf_braces_are_not_taken_for_jinja() -> None:
    assert templating.render(templating.parse("printf '{%s}' {{ inputs.user }}"), NAMESPACE) == "printf '{%s}' ops"


@pytest.mark.parametrize("text", ["{{" * 200_000, "{%" * 200_000 + "{{", "x " * 200_000 + "}}"])
def test_a_long_unbalanced_text_is_refused_in_linear_time(text: str) -> None:
    started = time.monotonic()
    with pytest.raises(templating.TemplateSyntaxError):
        templating.parse(text)
    assert time.monotonic() - started < 5  # a lazy regex retried at every '{{' took minutes


def test_a_long_expression_tokenizes_in_linear_time() -> None:
    started = time.monotonic()
    with pytest.raises(templating.TemplateSyntaxError):
        templating.parse("{{ x" + " " * 1_000_000 + "@ }}")
    assert time.monotonic() - started < 5
