"""`--limit`: which hosts of an inventory a run takes, as Ansible's host patterns say it (a subset).

Host names, group names (every host below the group), `*` and `?` globs over both,
joined by `:` or `,`; `all` and `*` are every host. Exclusions (`!`), intersections
(`&`), regular expressions (`~`), subscripts (`web[0]`) and `@FILE` are refused, and
so is a term that matches nothing: a typo during an incident must not quietly audit,
or revoke on, fewer hosts than meant.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence

from recovery.errors import UsageError

__all__ = ["select"]


def select(names: Sequence[str], groups: dict[str, list[str]], limit: str) -> list[str]:
    """The host names a `--limit` pattern chooses, in inventory order.

    :param names: every host's name, in inventory order.
    :param groups: every group's hosts, descendants included (`all` too).
    :raises UsageError: an unsupported pattern, or a term that matches nothing.
    """
    if "," not in limit and limit.strip() in (*names, *groups):
        terms = [limit.strip()]  # a name with colons in it, as an IPv6 address: Ansible takes it whole too
    else:
        terms = [term.strip() for term in re.split("," if "," in limit else ":", limit)]
    terms = [term for term in terms if term]
    if not terms:
        raise UsageError(f"--limit {limit!r}: no host or group named; give names, groups or globs such as 'web*'")
    chosen: set[str] = set()
    for term in terms:
        problem = _unsupported_term(term)
        if problem is not None:
            raise UsageError(f"--limit {limit!r}: {term!r}: {problem}")
        matched = _matches(term, groups, names)
        if not matched:
            group_names = ", ".join(sorted(groups)[:20])
            raise UsageError(
                f"--limit {limit!r}: {term!r} matches no host or group of the inventory (its groups: {group_names}); "
                "a term that matches nothing is refused, so that a typo does not quietly leave hosts out"
            )
        chosen.update(matched)
    return [name for name in names if name in chosen]


def _unsupported_term(term: str) -> str | None:
    if term.startswith(("!", "&")):
        return (
            "exclusions (!) and intersections (&) are not supported: list the hosts and groups to include, "
            "joined by ':' or ','"
        )
    if term.startswith("~"):
        return "regular expressions (~) are not supported: use names, groups and '*' globs"
    if term.startswith("@"):
        return "limit files (@FILE) are not read: join the names with ',' instead"
    if "[" in term:
        return "subscripts and ranges ([...]) are not supported: name the hosts, or use a '*' glob"
    return None


def _matches(term: str, groups: dict[str, list[str]], known: Sequence[str]) -> set[str]:
    if term in ("all", "*"):
        return set(known)
    if term in groups:
        return set(groups[term])
    if term in known:
        return {term}
    if "*" not in term and "?" not in term:
        return set()
    found = {name for name in known if fnmatch.fnmatchcase(name, term)}
    for group, members in groups.items():
        if fnmatch.fnmatchcase(group, term):
            found.update(members)
    return found
