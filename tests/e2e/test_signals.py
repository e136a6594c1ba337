"""Real signals to a real `python -m recovery run` against the real lab: the Ctrl-C path for every stop.

Each run is caught in its verify step with the lab's sshd stopped (the console is logged in
and the key is published, so there is everything to clean up); then a signal arrives, as
from systemd, Kubernetes, `timeout`, a CI cancel (SIGTERM), a dropped SSH session (SIGHUP)
or an operator (SIGINT).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

from recovery import lab
from recovery.errors import LabError
from tests.e2e.conftest import PLAYBOOK, ROOT, Result, recovery

pytestmark = pytest.mark.lab


def start_run(info: lab.LabInfo, workdir: Path, *extra: str) -> subprocess.Popen[str]:
    """A recovery with the console URL in the environment (out of `ps`), publishing over HTTP."""
    return subprocess.Popen(
        [sys.executable, "-m", "recovery", "run", str(PLAYBOOK), "--journal", str(workdir / "runs"),
         "-e", f"ssh_host={info.ssh_host}", "-e", f"ssh_port={info.ssh_port}", "-e", f"user={info.user}",
         "-e", f"host_key_fingerprint={info.host_key_fingerprint}", "-e", "publish=http", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, **lab_env(info, workdir)},
    )


def lab_env(info: lab.LabInfo, workdir: Path) -> dict[str, str]:
    return {
        "RECOVERY_CONSOLE_URL": info.console_url,
        "RECOVERY_CONSOLE_PASSWORD": info.console_password().reveal(),
        "RECOVERY_KEYS_DIR": str(workdir / "keys"),
    }


def wait_for(process: subprocess.Popen[str], marker: str) -> list[str]:
    """stderr lines up to the one containing `marker` (the process keeps running)."""
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if marker in line:
            return seen
    raise AssertionError(f"the run ended before {marker!r}:\n{''.join(seen)}")


def finish(process: subprocess.Popen[str], seen: list[str]) -> Result:
    try:
        out, rest = process.communicate(timeout=120)
    finally:
        process.kill()
    return Result(process.returncode, out, "".join(seen) + rest)


def journal_of(workdir: Path, result: Result) -> Path:
    return workdir / "runs" / result.run_id


def interrupted_at_verify(start_lab, workdir: Path, signum: signal.Signals) -> tuple[lab.LabInfo, Result]:
    info = start_lab()
    lab.stop_process(info, "sshd")
    process = start_run(info, workdir)
    seen = wait_for(process, "] verify:")
    process.send_signal(signum)
    return info, finish(process, seen)


def assert_cleaned_up_and_reported(workdir: Path, result: Result) -> dict:
    assert result.code == 130, result.stderr
    journal = journal_of(workdir, result)
    assert json.loads((journal / "run.json").read_text())["status"] == "interrupted"
    report = json.loads((journal / "report.json").read_text())
    assert report["status"] == "interrupted"
    assert report["failed_step"] == "verify"
    assert (journal / "report.md").read_text().startswith(f"# Recovery {result.run_id}: INTERRUPTED")
    assert "logged out of the console" in report["rolled_back"]
    assert len(report["withdrawn"]) == 1, "the published key must be withdrawn"
    assert "closed the http publisher" in report["rolled_back"]
    assert "cleanup done (newest first): " in result.stderr
    assert f"report: {journal / 'report.md'}\n" in result.stderr
    assert f"run {PLAYBOOK} --resume {result.run_id} --journal {workdir / 'runs'}" in result.stderr
    return report


def assert_logged_out(workdir: Path, result: Result) -> None:
    """The console answered our `exit` with bash's `logout` or a fresh login prompt."""
    transcript = (journal_of(workdir, result) / "transcript.log").read_text()
    after_exit = transcript.rsplit(">>> exit", 1)[1]
    assert re.search(r"logout|login: ", after_exit), after_exit


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=["TERM", "HUP", "INT"])
def test_a_stop_signal_logs_out_withdraws_the_key_writes_the_report_and_exits_130(
    signum: signal.Signals, start_lab, workdir: Path
) -> None:
    _, result = interrupted_at_verify(start_lab, workdir, signum)
    report = assert_cleaned_up_and_reported(workdir, result)
    assert_logged_out(workdir, result)
    assert {step["id"]: step["status"] for step in report["timeline"]}["verify"] == "interrupted"
    assert any("verify (ssh.verify) was cut off mid-way" in change for change in report["vm_changes"])


def test_resume_after_an_interrupted_run_and_again_after_a_failed_resume(start_lab, workdir: Path) -> None:
    info, interrupted = interrupted_at_verify(start_lab, workdir, signal.SIGTERM)
    assert interrupted.code == 130, interrupted.stderr
    resume = ("run", str(PLAYBOOK), "--journal", str(workdir / "runs"), "--resume", interrupted.run_id)
    still_down = recovery(*resume, env=lab_env(info, workdir), timeout=180)
    assert still_down.code == 1, still_down.stderr
    assert "refused" in still_down.stderr
    info = lab.start_sshd(info)
    finished = recovery(*resume, env=lab_env(info, workdir), timeout=180)
    assert finished.code == 0, finished.stderr
    report = json.loads((journal_of(workdir, interrupted) / "report.json").read_text())
    assert report["status"] == "succeeded"
    assert {step["id"]: step["status"] for step in report["timeline"]}["key"] == "resumed"
    new_key = report["keys"][0]["public_key"]
    lines = (lab.read_authorized_keys(info) or b"").decode().splitlines()
    assert lines.count(new_key) == 1
    assert lines[0] == info.old_public_key


def test_two_runs_against_one_vm_do_not_fight(start_lab, workdir: Path) -> None:
    info = start_lab()
    # The first run must still hold its locks when the others start, however slowly they start on
    # a busy machine: its SSH port accepts connections and never speaks, so verify waits, retrying.
    silent = socket.create_server(("127.0.0.1", 0))
    first = start_run(info, workdir, "-e", f"ssh_port={silent.getsockname()[1]}")
    seen = wait_for(first, "] verify:")
    run_id = Result(0, "", "".join(seen)).run_id
    try:
        second = recovery("run", str(PLAYBOOK), "--journal", str(workdir / "runs"), "-e", f"ssh_host={info.ssh_host}",
                          "-e", f"user={info.user}", "-e", "trust_first_use=true", env=lab_env(info, workdir))
        same = recovery("run", str(PLAYBOOK), "--journal", str(workdir / "runs"), "--resume", run_id,
                        env=lab_env(info, workdir))
    finally:
        first.send_signal(signal.SIGTERM)
        result = finish(first, seen)
        silent.close()
    assert second.code == 2, second.stderr
    assert f"another run is recovering {info.user}@{info.ssh_host}: run {run_id} (pid {first.pid})" in second.stderr
    assert same.code == 2, same.stderr
    assert f"run {run_id} is being run by another process (run {run_id} (pid {first.pid}))" in same.stderr
    assert_cleaned_up_and_reported(workdir, result)


class FreezingProxy:
    """Between websockify and the lab's serial port: once `trigger` is typed, the VM's answers stop arriving.

    The console then hangs in the middle of our logout, as a wedged VM would, which is where
    the test lands its second Ctrl-C.
    """

    def __init__(self, target_port: int, trigger: bytes) -> None:
        self.target_port = target_port
        self.trigger = trigger
        self.frozen = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def __enter__(self) -> FreezingProxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self._listener.close()
        for sock in self._sockets:
            sock.close()
        for thread in self._threads:
            thread.join(timeout=2)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, upstream]
            for source, sink, typed in ((client, upstream, True), (upstream, client, False)):
                thread = threading.Thread(target=self._pump, args=(source, sink, typed), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket, typed: bool) -> None:
        seen = b""
        with contextlib.suppress(OSError):
            while data := source.recv(4096):
                if typed:
                    seen = (seen + data)[-256:]
                    if self.trigger in seen:
                        self.frozen.set()
                elif self.frozen.is_set():
                    continue  # swallowed: the VM seems to hang
                sink.sendall(data)


@pytest.fixture
def frozen_console(start_lab) -> Iterator[tuple[lab.LabInfo, FreezingProxy]]:
    info = start_lab()
    with FreezingProxy(info.serial_port, trigger=b"exit\r") as proxy:
        lab.replace_console_target(info, "127.0.0.1", proxy.port)
        yield info, proxy


def test_ctrl_c_during_cleanup_cuts_short_only_that_cleanup(frozen_console, workdir: Path) -> None:
    info, proxy = frozen_console
    lab.stop_process(info, "sshd")
    process = start_run(info, workdir)
    seen = wait_for(process, "] verify:")
    process.send_signal(signal.SIGINT)
    assert proxy.frozen.wait(timeout=60), "the cleanup never typed exit"
    process.send_signal(signal.SIGINT)  # the logout now waits for an answer that never comes
    result = finish(process, seen)
    assert result.code == 130, result.stderr
    report = json.loads((journal_of(workdir, result) / "report.json").read_text())
    assert report["status"] == "interrupted"
    assert "cleanup interrupted by a second Ctrl-C: logged out of the console" in report["notes"]
    assert "logged out of the console" not in report["rolled_back"]
    assert "closed the console" in report["rolled_back"]
    assert len(report["withdrawn"]) == 1, "the cleanups after the cut-short one still ran"
    assert "cleanup cut short by Ctrl-C: logged out of the console; going on with the rest" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_a_stop_signal_to_the_demo_cleans_up_and_stops_the_lab(signum: signal.Signals) -> None:
    process = subprocess.Popen([sys.executable, "-m", "recovery", "demo"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=ROOT)
    seen = wait_for(process, "] login:")
    process.send_signal(signum)
    result = finish(process, seen)
    kept = re.search(r"keys and journal kept in (\S+)", result.stderr)
    assert kept, result.stderr
    base = Path(kept.group(1))
    try:
        assert result.code == 130, result.stderr
        report = json.loads((base / "runs" / result.run_id / "report.json").read_text())
        assert report["status"] == "interrupted"
        assert "closed the console" in report["rolled_back"]
        assert "lab stopped" in result.stderr
        with pytest.raises(LabError):  # lab down removed it: nothing left running
            lab.status(base / "lab")
    finally:
        shutil.rmtree(base, ignore_errors=True)
