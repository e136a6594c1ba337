"""The Python API: run a playbook, get its report. The CLI, the demo and the audit's remediation stand on it.

    import recovery
    report = recovery.run(
        "playbooks/restore-access-serial.yaml",
        {"console_url": url, "ssh_host": "203.0.113.10", "user": "ubuntu", "host_key_fingerprint": pin},
        {"console_password": password},
    )
    print(report.status, report.proof)

Nothing here prints, exits or installs a signal handler (handlers work only on the
main thread). To stop a run from elsewhere, pass a `CancelToken` and cancel it: the
run cleans up as on Ctrl-C and returns its report with status `interrupted`. A real
Ctrl-C (KeyboardInterrupt) in the calling thread still propagates, after the cleanup,
as `RunInterrupted` carrying the report.

Errors: `UsageError` (and subclasses such as `PreflightError`) when the run cannot
start or was refused before anything changed; `JournalError` when the run directory
cannot be made; `InternalError` for a bug, with the traceback kept in the run's
`debug.log`. A failed step is not an exception: it is `report.status == "failed"`.
"""

from __future__ import annotations

import os
import shutil
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from recovery.cloud import cloud_to_use
from recovery.engine.cancel import CancelToken
from recovery.engine.config import Config
from recovery.engine.journal import STATUS_RUNNING, STATUS_SUCCEEDED, Journal
from recovery.engine.playbook import Playbook, load_playbook, resolve_inputs
from recovery.engine.preflight import PreflightError
from recovery.engine.preflight import secrets_in_use as preflight_secrets_in_use
from recovery.engine.report import RunReport
from recovery.engine.runner import Runner, RunRequest
from recovery.errors import InternalError, JournalError, RecoveryError, UsageError
from recovery.safety.redact import Secret, too_short_to_mask

__all__ = ["RunInterrupted", "dry_run", "dry_run_plan", "run", "secrets_in_use"]

PlaybookSource = Playbook | str | os.PathLike[str]


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C reached the run; its cleanup has run and `report` says what was done and undone."""

    def __init__(self, report: RunReport) -> None:
        super().__init__(f"run {report.run_id} interrupted")
        self.report = report


def run(
    playbook: PlaybookSource,
    inputs: Mapping[str, object] | None = None,
    secrets: Mapping[str, str | Secret] | None = None,
    *,
    config: Config | None = None,
    journal_root: Path | None = None,
    resume: str | None = None,
    cancel: CancelToken | None = None,
    progress: Callable[[str], None] | None = None,
    confirm: Callable[[str], bool] | None = None,
) -> RunReport:
    """Run a playbook to its end and return the report.

    Args:
        playbook: a loaded `Playbook`, or the path of one.
        inputs: the playbook's inputs, as text (`-e NAME=VALUE`) or typed values.
        secrets: the playbook's secrets; plain strings are wrapped as `Secret`.
        config: defaults to `Config()` (no config file is read here).
        journal_root: where run directories go (default `config.journal.dir`).
        resume: a run id in `journal_root` to continue; its saved inputs fill the ones not given.
        cancel: cancel it from any thread to stop the run (cleanup runs; status `interrupted`).
        progress: called with one line per step, for a terminal or a log.
        confirm: asks a yes/no question before a route that reboots the VM (a terminal prompt); without
            it, such a route runs only with the input allow_reboot=true, else it is skipped.

    Returns:
        The report: `status` is succeeded, failed or interrupted; `journal` is the run directory;
        `journal_error` says why the journal could not keep the report (a full disk), if it could not.

    Raises:
        UsageError: bad playbook, inputs or secrets; the pre-flight refused the run; the run or
            its VM is held by another process. Nothing was changed.
        JournalError: the run directory cannot be made or locked.
        InternalError: a bug; the traceback is in the run's debug.log (unless a secret too
            short to mask was held).
        RunInterrupted: KeyboardInterrupt in the calling thread, after the cleanup.
    """
    config = config or Config()
    book = playbook if isinstance(playbook, Playbook) else load_playbook(Path(playbook))
    root = Path(journal_root or config.journal.dir).expanduser().absolute()  # reports name absolute paths
    journal, values, previous = _reopen(root, resume, book, _as_text(inputs or {}))
    resolved = resolve_inputs(book, values)
    wrapped = {name: value if isinstance(value, Secret) else Secret(value, f"<{name}>")
               for name, value in (secrets or {}).items()}
    _check_secrets(book, wrapped, preflight_secrets_in_use(book, resolved, config))
    fresh = journal is None
    journal = journal or Journal.create(root)
    try:
        journal.lock_run()
        target = _target(resolved, cloud_to_use(config.cloud.name))
        if target:
            journal.lock_target(root, *target)
        if progress is not None:
            progress(f"run {journal.run_id}: journal {journal.directory}")
        return _run_locked(book, resolved, wrapped, config, journal, previous, cancel or CancelToken(), progress,
                           confirm)
    except RecoveryError as exc:
        refused = isinstance(exc, PreflightError) or not journal.path("run.json").exists()
        if fresh and refused and not journal.load_steps():
            # Refused before any step ran (the pre-flight, a lock): leave no run behind to confuse --resume.
            journal.unlock()
            shutil.rmtree(journal.directory, ignore_errors=True)
        raise
    finally:
        journal.unlock()


def dry_run(
    playbook: PlaybookSource,
    inputs: Mapping[str, object] | None = None,
    *,
    config: Config | None = None,
    journal_root: Path | None = None,
    resume: str | None = None,
) -> str:
    """The dry-run text: what a `run` with the same arguments would do, secrets masked; changes nothing.

    Raises:
        UsageError: as `run` would raise it before changing anything (the pre-flight included).
    """
    from recovery.engine.plan import render_plan

    config = config or Config()
    book = playbook if isinstance(playbook, Playbook) else load_playbook(Path(playbook))
    root = Path(journal_root or config.journal.dir).expanduser().absolute()  # reports name absolute paths
    journal, values, _ = _reopen(root, resume, book, _as_text(inputs or {}))
    if journal is not None:
        journal.unlock()  # a plan only reads the run it would resume
    return render_plan(book, resolve_inputs(book, values), config)


def dry_run_plan(
    playbook: PlaybookSource,
    inputs: Mapping[str, object] | None = None,
    *,
    config: Config | None = None,
    journal_root: Path | None = None,
    resume: str | None = None,
) -> dict[str, Any]:
    """The plan `dry_run` shows, as one JSON-ready object for programs (`recovery.engine.plan.plan_document`).

    Raises:
        UsageError: as `dry_run`.
    """
    from recovery.engine.plan import plan_document

    config = config or Config()
    book = playbook if isinstance(playbook, Playbook) else load_playbook(Path(playbook))
    journal, values, _ = _reopen(journal_root or config.journal.dir, resume, book, _as_text(inputs or {}))
    if journal is not None:
        journal.unlock()  # a plan only reads the run it would resume
    return plan_document(book, resolve_inputs(book, values), config)


def _run_locked(
    playbook: Playbook,
    inputs: Mapping[str, object],
    secrets: Mapping[str, Secret],
    config: Config,
    journal: Journal,
    previous: Mapping[str, Mapping[str, Any]],
    cancel: CancelToken,
    progress: Callable[[str], None] | None,
    confirm: Callable[[str], bool] | None = None,
) -> RunReport:
    runner = Runner(
        RunRequest(playbook, inputs, secrets, config),
        journal,
        previous=previous,
        progress=progress or (lambda line: None),
        cancel=cancel,
        confirm=confirm,
    )
    try:
        return runner.run()
    except JournalError as exc:
        if runner.report.status == STATUS_RUNNING:
            raise  # the run could not start
        # The disk under the journal failed at the end: what the run did (and undid) is only here now.
        runner.report.journal_error = str(exc)
        return runner.report
    except KeyboardInterrupt:
        if cancel.cancelled:
            return runner.report
        raise RunInterrupted(runner.report) from None
    except RecoveryError:
        raise
    except Exception as exc:
        held = [*secrets.values(), *(v for v in inputs.values() if isinstance(v, Secret))]
        if any(too_short_to_mask(value) for value in held):
            where = "no traceback was kept: a secret too short to mask is held, and the traceback could show it"
        else:
            journal.write_text("debug.log", traceback.format_exc())
            where = f"the traceback is in {journal.path('debug.log')}; please attach it to a bug report"
        raise InternalError(f"internal error: this is a bug in recovery ({type(exc).__name__}); {where}") from exc


def _as_text(inputs: Mapping[str, object]) -> dict[str, str]:
    """Inputs as `-e` gives them, so that one set of rules types, checks and masks them."""
    def text(value: object) -> str:
        if isinstance(value, Secret):
            return value.reveal()  # resolve_inputs wraps a sensitive input again
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return {name: text(value) for name, value in inputs.items() if value is not None}


def secrets_in_use(
    playbook: PlaybookSource,
    inputs: Mapping[str, object],
    *,
    config: Config | None = None,
    journal_root: Path | None = None,
    resume: str | None = None,
) -> set[str]:
    """The secrets a run with these inputs uses: the others are neither asked for nor required.

    With `resume`, the run's saved inputs count too, as they will in the run: a resumed run is
    given again only what was sensitive.

    Raises:
        UsageError: the playbook or the inputs are invalid, or the run to resume is unknown.
    """
    config = config or Config()
    book = playbook if isinstance(playbook, Playbook) else load_playbook(Path(playbook))
    values = _as_text(inputs)
    if resume is not None:
        journal = Journal.open(journal_root or config.journal.dir, resume)
        values = _merge_saved(journal.read_json("run.json"), resume, book, values)
    return preflight_secrets_in_use(book, resolve_inputs(book, values), config)


def _check_secrets(playbook: Playbook, secrets: Mapping[str, Secret], in_use: set[str]) -> None:
    problems = [f"secret {name!r}: {playbook.path.name} declares no such secret" for name in secrets
                if name not in playbook.secrets]
    problems += [f"secret {name!r} is missing" + (f" (set {decl.env})" if decl.env else "")
                 for name, decl in playbook.secrets.items()
                 if decl.required and name not in secrets and name in in_use]
    if problems:
        raise UsageError("invalid secrets:\n" + "\n".join(f"  {p}" for p in problems))


def _reopen(
    root: Path, run_id: str | None, playbook: Playbook, given: dict[str, str]
) -> tuple[Journal | None, dict[str, str], dict[str, dict[str, Any]]]:
    """For a resume: the run's journal (locked), its saved inputs under those given again, its steps."""
    if run_id is None:
        return None, given, {}
    journal = Journal.open(root, run_id)
    journal.lock_run()  # before reading: another process may be running it right now
    try:
        saved = journal.read_json("run.json")
        if Path(saved["playbook"]) != playbook.path.resolve():
            raise UsageError(f"run {run_id} was made with {saved['playbook']}, not {playbook.path.resolve()}")
        if saved.get("status") == STATUS_SUCCEEDED:
            raise UsageError(f"run {run_id} already succeeded; there is nothing to resume")
        return journal, _merge_saved(saved, run_id, playbook, given), journal.load_steps()
    except BaseException:
        journal.unlock()
        raise


def _merge_saved(saved: Mapping[str, Any], run_id: str, playbook: Playbook, given: dict[str, str]) -> dict[str, str]:
    """A resumed run's inputs: those saved in its run.json, under those given again."""
    merged = {}
    for name, value in (saved.get("inputs") or {}).items():
        decl = playbook.inputs.get(name)
        if name in given or decl is None or value is None:
            continue
        if decl.sensitive and value:
            env = f", or set {decl.env}" if decl.env else ""
            raise UsageError(
                f"run {run_id}: input {name!r} is sensitive and was not saved; give it again with "
                f"-e {name}=@FILE{env}"
            )
        merged[name] = str(value).lower() if isinstance(value, bool) else str(value)
    merged.update(given)
    return merged


def _target(inputs: Mapping[str, object], cloud: str | None) -> tuple[str, str] | None:
    """What identifies the VM, for the lock: the server in its cloud, else user@host (a console URL changes
    with every token)."""
    server = inputs.get("server")
    if server:
        return f"server:{cloud or ''}:{server}", f"server {server}" + (f" in cloud {cloud}" if cloud else "")
    host, user = inputs.get("ssh_host"), inputs.get("user")
    if host and user:
        return f"ssh:{user}@{host}", f"{user}@{host}"
    return None
