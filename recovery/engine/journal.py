"""One directory per run: what happened, in files an operator (or `--resume`) can read back.

    <root>/<run-id>/
      run.json             playbook, inputs (sensitive ones masked), status, failed step
      events.jsonl         one JSON object per event, appended
      steps/NN-<id>.json   each step's status and outputs (secrets masked)
      transcript.log       the console conversation, secrets scrubbed
      report.json, report.md
      debug.log            only after an unexpected error: the traceback for a bug report
      .lock                held (flock) by the one process running or resuming the run
    <root>/.targets/<hash>.lock   held by the run recovering that VM (server, or user@host)

Every file is created 0600 and every directory 0700, whatever the umask; every
JSON document is written to a temporary file and renamed, so a crash leaves either
the old or the new version, never half of one. Appended files are written with one
`write` per record. Nothing here holds a secret: values pass through
`redact.scrub` on the way in.

The transcript is a record, not a precondition: typing into a console must never
stop half-way because the disk filled up. A failed transcript write is remembered
(`transcript_problem`) and reported, and the run goes on.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recovery.errors import JournalError, UsageError
from recovery.safety.files import make_dirs, write_atomic
from recovery.safety.redact import Secret, scrub

STATUS_RUNNING = "running"
STATUS_SUCCEEDED = "succeeded"
STATUS_FAILED = "failed"
STATUS_INTERRUPTED = "interrupted"


def default_root() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "recovery" / "runs"


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_run_id(run_id: str) -> str:
    """A run id is a name in the journal root, never a path that could lead out of it.

    Raises:
        UsageError: `run_id` has a slash, starts with a dot, or holds other characters.
    """
    if not _RUN_ID.fullmatch(run_id):
        raise UsageError(
            f"{run_id!r} is not a run id: a run id is a name such as {new_run_id()} (letters, digits, "
            "'.', '_' and '-', not starting with a dot), never a path; choose the journal root with --journal"
        )
    return run_id


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
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(descriptor, 0o600)  # exactly, whatever the umask
        os.write(descriptor, text.encode("utf-8"))
    finally:
        os.close(descriptor)


class Journal:
    """The run directory of one run. Create with `Journal.create` or `Journal.open`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.run_id = directory.name
        self._step_files = directory / "steps"
        self.transcript_problem: str | None = None  # why the transcript is incomplete, if it is
        self._locks: dict[str, int] = {}

    @classmethod
    def create(cls, root: Path, run_id: str | None = None) -> Journal:
        """Make a fresh run directory (0700) under `root`.

        Raises:
            JournalError: the directory cannot be made.
        """
        directory = root / check_run_id(run_id or new_run_id())
        try:
            make_dirs(root)
            directory.mkdir(mode=0o700)
            os.chmod(directory, 0o700)
            (directory / "steps").mkdir(mode=0o700)
            os.chmod(directory / "steps", 0o700)
        except OSError as exc:
            raise JournalError(f"cannot create the run journal at {directory}: {exc.strerror or exc}") from exc
        return cls(directory)

    @classmethod
    def open(cls, root: Path, run_id: str) -> Journal:
        """An existing run, for --resume.

        Raises:
            UsageError: no such run, or not a run id (a wrong --resume argument).
        """
        directory = root / check_run_id(run_id)
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
        """Append console text, scrubbed of every known secret; never raises.

        The console may be half-way through a command: a full disk must not stop the
        typing (or the logout after it). The first failure is kept in
        `transcript_problem` for the report; nothing more is written after it, so the
        transcript is a clean prefix of the conversation.
        """
        if self.transcript_problem is not None:
            return
        try:
            _append(self.directory / "transcript.log", scrub(text))
        except OSError as exc:
            self.transcript_problem = (
                f"the transcript {self.directory / 'transcript.log'} is incomplete: writing it failed "
                f"({exc.strerror or exc}) at {datetime.now(UTC).isoformat(timespec='seconds')}; "
                "the console work went on without it"
            )

    def stop_transcript(self, reason: str) -> None:
        """Keep no transcript from now on, for `reason` (a secret too short to scrub)."""
        self.transcript_problem = f"no transcript was kept: {reason}"

    # -- locks ------------------------------------------------------------------------------

    def lock_run(self) -> None:
        """Hold this run for this process: a second process running or resuming it is refused.

        Raises:
            UsageError: another process holds the run.
        """
        holder = self._lock("run", self.directory / ".lock")
        if holder is not None:
            raise UsageError(
                f"run {self.run_id} is being run by another process ({holder}); two processes must not type "
                "into one console at once. Wait for it to end, or stop it (Ctrl-C, or kill its pid)"
            )

    def lock_target(self, root: Path, key: str, what: str) -> None:
        """Hold the VM `what` (a server, or user@host) for this run, in the journal root.

        A second run against the same VM is refused rather than made to wait: two runs
        typing into one console interleave their keystrokes, and at an incident a refusal
        that names the other run tells the operator more than a silent wait.

        Raises:
            UsageError: another run holds the VM.
        """
        directory = root / ".targets"
        make_dirs(directory)
        name = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32] + ".lock"
        holder = self._lock("target", directory / name)
        if holder is not None:
            raise UsageError(
                f"another run is recovering {what}: {holder}. Two recoveries of one VM would type into the "
                "same console at once; wait for that run to end (or stop it), then resume or start again"
            )

    def _lock(self, kind: str, path: Path) -> str | None:
        """Take an exclusive flock on `path` and write who holds it; the holder's words if taken."""
        if kind in self._locks:
            return None
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise JournalError(f"cannot open the lock file {path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 512, 0).decode("utf-8", errors="replace").strip()
            os.close(descriptor)
            return holder or "a process that has not said which run it is"
        os.fchmod(descriptor, 0o600)
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"run {self.run_id} (pid {os.getpid()})\n".encode(), 0)
        self._locks[kind] = descriptor  # released when the process ends, however it ends
        return None

    def unlock(self) -> None:
        """Release every lock this journal holds (the process ending does that too)."""
        for descriptor in self._locks.values():
            with contextlib.suppress(OSError):
                os.close(descriptor)
        self._locks.clear()

    def save_step(self, index: int, step_id: str, record: Mapping[str, object]) -> None:
        self.write_json(f"steps/{index:02d}-{step_id}.json", record)

    def load_steps(self) -> dict[str, dict[str, Any]]:
        """Saved step records by step id, for --resume."""
        records: dict[str, dict[str, Any]] = {}
        for path in sorted(self._step_files.glob("*.json")):
            record = self.read_json(f"steps/{path.name}")
            records[str(record["id"])] = record
        return records
