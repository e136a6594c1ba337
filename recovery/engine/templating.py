"""`{{ ... }}` templates over inputs, step outputs and secrets, with nothing else reachable.

The language is deliberately tiny, so that a playbook can never run code or reach
into Python objects: an expression is a dotted reference into the namespace
(`inputs.user`, `steps.key.outputs.public_key`, `secrets.console_password`,
`run.id`), a literal (`'text'`, `42`, `true`, `false`, `null`), and the operators
`==`, `!=`, `not`, `and`, `or` (which, as in Python, yield an operand, so
`a or b` picks the first non-empty value) and parentheses.

A value that is exactly one `{{ expression }}` keeps its type: a number stays a
number, a `Secret` stays a `Secret`. Text around an expression makes a string,
or, if any part is a secret, a `Secret` whose label shows the text with `***`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from recovery.safety.redact import MASK, Secret

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'[^']*'|"[^"]*")
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<op>==|!=|\(|\))
      | (?P<name>[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z_][A-Za-z0-9_-]*)*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "true", "false", "null"}
_BLANK = re.compile(r"\s*\Z")
# Real expressions are a handful of tokens; these bounds keep the recursive parser, and
# everything that walks its tree, far from Python's recursion limit on any input.
MAX_TOKENS = 200
MAX_NESTING = 32


class TemplateSyntaxError(ValueError):
    """A template that cannot be parsed; the message says where in the text."""


@dataclass(frozen=True)
class Ref:
    """A dotted reference such as `steps.key.outputs.public_key`."""

    parts: tuple[str, ...]

    def __str__(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True)
class Literal:
    value: object


@dataclass(frozen=True)
class Not:
    operand: Expr


@dataclass(frozen=True)
class Binary:
    op: str  # "==", "!=", "and", "or"
    left: Expr
    right: Expr


Expr = Ref | Literal | Not | Binary


class UndefinedReference(LookupError):
    """A reference names something that does not exist in the namespace."""


@dataclass(frozen=True)
class Unknown:
    """A value not known yet: an output of a step that has not run, during pre-flight and --dry-run.

    Expressions over it evaluate partially: `known or x` is decided, `unknown or x` stays
    unknown, so a check can tell "certainly empty" (refuse now) from "decided later".
    `label` is what a dry run shows in its place, e.g. `<steps.find.outputs.ssh_host>`.
    """

    label: str

    def __bool__(self) -> bool:
        raise TypeError(f"{self.label} is not known yet; test with `isinstance(value, Unknown)` first")


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        if _BLANK.match(text, position):
            break
        if len(tokens) == MAX_TOKENS:
            raise TemplateSyntaxError(f"expression longer than {MAX_TOKENS} tokens: {text.strip()[:40]!r}...")
        match = _TOKEN.match(text, position)
        if not match:
            raise TemplateSyntaxError(f"unexpected {text[position:].strip()[:20]!r} in {text.strip()!r}")
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "name" and value in _KEYWORDS:
            kind = "keyword"
        tokens.append((kind, value))
        position = match.end()
    return tokens


class _Parser:
    """Recursive descent: or_expr := and_expr ('or' and_expr)* ; and so on down."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0
        self.depth = 0

    def parse(self) -> Expr:
        if not self.tokens:
            raise TemplateSyntaxError("empty expression '{{ }}'")
        expr = self._or()
        if self.index != len(self.tokens):
            raise TemplateSyntaxError(f"unexpected {self.tokens[self.index][1]!r} in {self.text.strip()!r}")
        return expr

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def _take(self) -> tuple[str, str]:
        token = self._peek()
        if token is None:
            raise TemplateSyntaxError(f"expression ends too early: {self.text.strip()!r}")
        self.index += 1
        return token

    def _or(self) -> Expr:
        expr = self._and()
        while self._peek() == ("keyword", "or"):
            self.index += 1
            expr = Binary("or", expr, self._and())
        return expr

    def _and(self) -> Expr:
        expr = self._not()
        while self._peek() == ("keyword", "and"):
            self.index += 1
            expr = Binary("and", expr, self._not())
        return expr

    def _not(self) -> Expr:
        if self._peek() == ("keyword", "not"):
            self.index += 1
            return Not(self._nested(self._not))
        return self._comparison()

    def _nested(self, parse: Callable[[], Expr]) -> Expr:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise TemplateSyntaxError(f"expression nested deeper than {MAX_NESTING} levels: {self.text.strip()[:40]!r}")
        try:
            return parse()
        finally:
            self.depth -= 1

    def _comparison(self) -> Expr:
        expr = self._atom()
        token = self._peek()
        if token is not None and token[0] == "op" and token[1] in ("==", "!="):
            self.index += 1
            expr = Binary(token[1], expr, self._atom())
        return expr

    def _atom(self) -> Expr:
        kind, value = self._take()
        if kind == "op" and value == "(":
            expr = self._nested(self._or)
            if self._take() != ("op", ")"):
                raise TemplateSyntaxError(f"missing ')' in {self.text.strip()!r}")
            return expr
        if kind == "string":
            return Literal(value[1:-1])
        if kind == "number":
            try:
                return Literal(float(value) if "." in value else int(value))
            except ValueError:  # more digits than int() converts (4300): no real value has them
                raise TemplateSyntaxError(f"number too long in {self.text.strip()[:40]!r}...") from None
        if kind == "keyword" and value in ("true", "false", "null"):
            return Literal({"true": True, "false": False, "null": None}[value])
        if kind == "name":
            return Ref(tuple(value.split(".")))
        raise TemplateSyntaxError(f"unexpected {value!r} in {self.text.strip()!r}")


@dataclass(frozen=True)
class Template:
    """A parsed string: literal text and expressions, in order."""

    source: str
    parts: tuple[str | Expr, ...]

    @property
    def is_single_expression(self) -> bool:
        return len(self.parts) == 1 and not isinstance(self.parts[0], str)

    @property
    def is_constant(self) -> bool:
        return all(isinstance(p, str) for p in self.parts)

    def references(self) -> Iterator[Ref]:
        for part in self.parts:
            if not isinstance(part, str):
                yield from _references(part)


def _references(expr: Expr) -> Iterator[Ref]:
    if isinstance(expr, Ref):
        yield expr
    elif isinstance(expr, Not):
        yield from _references(expr.operand)
    elif isinstance(expr, Binary):
        yield from _references(expr.left)
        yield from _references(expr.right)


def parse(source: str) -> Template:
    """Parse `source`; raises TemplateSyntaxError naming the bad expression.

    `{% ... %}` and `{# ... #}` are refused rather than kept as text: someone who wrote them
    expects Jinja to run them, and text that silently stays in a command is worse.
    """
    for opener, closer in (("{%", "%}"), ("{#", "#}")):
        jinja = _between(source, opener, closer, 0)
        if jinja is not None:
            raise TemplateSyntaxError(
                f"{source[jinja[0] : jinja[1]][:40]!r}: this is not Jinja; only '{{{{ expression }}}}' is "
                "understood (a condition goes in the step's `when:`, a comment after a YAML `#`)"
            )
    parts: list[str | Expr] = []
    position = 0
    # str.find, not a lazy regex: a regex would retry from every '{{' of a text that has no
    # '}}' after them, quadratic in the text's length.
    while (found := _between(source, "{{", "}}", position)) is not None:
        start, end = found
        if start > position:
            parts.append(source[position:start])
        parts.append(_Parser(source[start + 2 : end - 2]).parse())
        position = end
    rest = source[position:]
    if "{{" in rest or "}}" in rest:
        raise TemplateSyntaxError(f"unbalanced '{{{{' or '}}}}' in {_excerpt(source)}")
    if rest:
        parts.append(rest)
    return Template(source, tuple(parts))


def _between(source: str, opener: str, closer: str, position: int) -> tuple[int, int] | None:
    """Start and end of the first `opener ... closer` at or after `position`, or None."""
    start = source.find(opener, position)
    if start < 0:
        return None
    end = source.find(closer, start + len(opener))
    return None if end < 0 else (start, end + len(closer))


def _excerpt(text: str) -> str:
    return repr(text) if len(text) <= 80 else repr(text[:77]) + "..."


def lookup(namespace: Mapping[str, object], ref: Ref) -> object:
    """Follow `ref` through nested mappings only; attributes of objects are never read."""
    current: object = namespace
    for depth, name in enumerate(ref.parts):
        if not isinstance(current, Mapping) or name not in current:
            known = ", ".join(sorted(current)) if isinstance(current, Mapping) else "nothing"
            where = ".".join(ref.parts[: depth + 1])
            raise UndefinedReference(f"{where} is not defined (known here: {known})")
        current = current[name]
    return current


def evaluate(expr: Expr, namespace: Mapping[str, object]) -> object:
    """The expression's value; an `Unknown` operand makes the result `Unknown` unless it cannot matter."""
    if isinstance(expr, Literal):
        return expr.value
    if isinstance(expr, Ref):
        return lookup(namespace, expr)
    if isinstance(expr, Not):
        operand = evaluate(expr.operand, namespace)
        return operand if isinstance(operand, Unknown) else not operand
    left = evaluate(expr.left, namespace)
    if isinstance(left, Unknown):
        # `unknown or x` and `unknown and x` depend on what `unknown` turns out to be.
        return left if expr.op in ("or", "and") else Unknown(f"<{_source(expr)}>")
    if expr.op == "or":
        return left if left else evaluate(expr.right, namespace)
    if expr.op == "and":
        return evaluate(expr.right, namespace) if left else left
    right = evaluate(expr.right, namespace)
    if isinstance(right, Unknown):
        return Unknown(f"<{_source(expr)}>")
    equal = _comparable(left) == _comparable(right)
    return equal if expr.op == "==" else not equal


def _source(expr: Expr) -> str:
    """The expression written back as text, for the label of an unknown result."""
    if isinstance(expr, Literal):
        value = expr.value
        if isinstance(value, str):
            return f"'{value}'"
        if isinstance(value, bool) or value is None:
            return {True: "true", False: "false", None: "null"}[value]
        return str(value)
    if isinstance(expr, Ref):
        return str(expr)
    if isinstance(expr, Not):
        return f"not {_source(expr.operand)}"
    return f"{_source(expr.left)} {expr.op} {_source(expr.right)}"


def _comparable(value: object) -> object:
    # Comparing a secret is allowed (a `when` may test one) but never shows it.
    return value.reveal() if isinstance(value, Secret) else value


def render(template: Template, namespace: Mapping[str, object]) -> object:
    """Render a parsed template; see the module docstring for the typing rules."""
    if template.is_single_expression:
        single = template.parts[0]
        assert not isinstance(single, str)
        return evaluate(single, namespace)
    raw: list[str] = []
    label: list[str] = []
    secret = False
    for part in template.parts:
        value = part if isinstance(part, str) else evaluate(part, namespace)
        if isinstance(value, Unknown):
            return Unknown(f"<{template.source}>")
        if isinstance(value, Secret):
            secret = True
            raw.append(value.reveal())
            label.append(MASK)
        else:
            text = _to_text(value, template.source)
            raw.append(text)
            label.append(text)
    return Secret("".join(raw), "".join(label)) if secret else "".join(raw)


def _to_text(value: object, source: str) -> str:
    if value is None:
        raise UndefinedReference(
            f"an expression in {source!r} is empty (a skipped step's output?) and cannot be "
            "joined with text; use a value that is only the expression, or `x or 'default'`"
        )
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise UndefinedReference(f"an expression in {source!r} gives a {type(value).__name__}, not text")


def render_value(value: object, namespace: Mapping[str, object]) -> object:
    """Render every string inside lists and mappings; other values pass through."""
    if isinstance(value, str):
        return render(parse(value), namespace)
    if isinstance(value, list):
        return [render_value(v, namespace) for v in value]
    if isinstance(value, dict):
        return {k: render_value(v, namespace) for k, v in value.items()}
    return value
