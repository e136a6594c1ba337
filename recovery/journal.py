"""One directory per run: what happened, in files an operator (or `--resume`) can read back.

    <root>/<run-id>/
      run.json             playbook, inputs (sensitive ones masked), status, failed step
      events.jsonl         one JSON object per event, appended
      steps/NN-<id>.json   each step's status and outputs (secrets masked)
      transcript.log       the console conversation, secrets scrubbed
      report.json, report.md
      debug.log            only after an unexpected error: the traceback for a bug report

Every file is created 0600 and every JSON document is written to a temporary
file and renamed, so a crash leaves either the old or the new version, never half
of one. Appended files are written with one `write` per record. Nothing here holds
a secret: values pass through `redact.scrub` on the way in.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recovery.errors import JournalError, UsageError
from recovery.files import write_atomic
from recovery.redact import Secret, scrub

STATUS_RUNNING = "running"
STATUS_SUCCEEDED = "succeeded"
STATUS_FAILED = "failed"
STATUS_INTERRUPTED = "interrupted"


def default_root() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "recovery" / "runs"


def new_run_id() -> str:
    """Sortable and unique: UTC time to the second plus a random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def to_jsonable(value: object) -> Any:
    """Plain JSON data with every secret masked; unknown objects become their str()."""
    if isinstance(value, Secret):
        return str(value)
    if isinstance(value, str):
        return scrub(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return scrub(str(value))


def _append(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(descriptor, text.encode("utf-8"))
    finally:
        os.close(descriptor)


class Journal:
    """The run directory of one run. Create with `Journal.create` or `Journal.open`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.run_id = directory.name
        self._step_files = directory / "steps"

    @classmethod
    def create(cls, root: Path, run_id: str | None = None) -> Journal:
        """Make a fresh run directory (0700) under `root`.

        Raises:
            JournalError: the directory cannot be made.
        """
        directory = root / (run_id or new_run_id())
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
            directory.mkdir(mode=0o700)
            (directory / "steps").mkdir(mode=0o700)
        except OSError as exc:
            raise JournalError(f"cannot create the run journal at {directory}: {exc.strerror or exc}") from exc
        return cls(directory)

    @classmethod
    def open(cls, root: Path, run_id: str) -> Journal:
        """An existing run, for --resume.

        Raises:
            UsageError: no such run (a wrong --resume argument).
        """
        directory = root / run_id
        if not (directory / "run.json").is_file():
            known = sorted(p.name for p in root.iterdir() if (p / "run.json").is_file()) if root.is_dir() else []
            hint = f" (runs in {root}: {', '.join(known[-5:])})" if known else f" (no runs in {root})"
            raise UsageError(f"no run {run_id!r} to resume{hint}")
        return cls(directory)

    def path(self, name: str) -> Path:
        return self.directory / name

    def write_json(self, name: str, data: object) -> None:
        try:
            write_atomic(self.directory / name, json.dumps(to_jsonable(data), indent=2) + "\n")
        except OSError as exc:
            raise JournalError(f"cannot write {self.directory / name}: {exc.strerror or exc}") from exc

    def write_text(self, name: str, text: str) -> None:
        try:
            write_atomic(self.directory / name, scrub(text))
        except OSError as exc:
            raise JournalError(f"cannot write {self.directory / name}: {exc.strerror or exc}") from exc

    def read_json(self, name: str) -> Any:
        try:
            return json.loads((self.directory / name).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise JournalError(f"cannot read {self.directory / name}: {exc}") from exc

    def event(self, kind: str, **fields: object) -> None:
        record = {"time": round(time.time(), 3), "event": kind, **fields}
        try:
            _append(self.directory / "events.jsonl", json.dumps(to_jsonable(record)) + "\n")
        except OSError as exc:
            raise JournalError(f"cannot append to {self.directory / 'events.jsonl'}: {exc.strerror or exc}") from exc

    def transcript(self, text: str) -> None:
        """Append console text; it is scrubbed of every known secret first."""
        try:
            _append(self.directory / "transcript.log", scrub(text))
        except OSError as exc:
            raise JournalError(f"cannot append to the transcript: {exc.strerror or exc}") from exc

    def save_step(self, index: int, step_id: str, record: Mapping[str, object]) -> None:
        self.write_json(f"steps/{index:02d}-{step_id}.json", record)

    def load_steps(self) -> dict[str, dict[str, Any]]:
        """Saved step records by step id, for --resume."""
        records: dict[str, dict[str, Any]] = {}
        for path in sorted(self._step_files.glob("*.json")):
            record = self.read_json(f"steps/{path.name}")
            records[str(record["id"])] = record
        return records
