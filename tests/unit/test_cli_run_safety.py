"""`recovery run` on a bad night: run ids that are paths, two processes at once, secrets kept out of argv, signals."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from recovery.cli.main import main
from recovery.engine.journal import Journal
from recovery.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
SERIAL = ROOT / "playbooks" / "restore-access-serial.yaml"
TOKEN = "tok-5ecret-123456"
URL = f"ws://127.0.0.1:9/?token={TOKEN}"
TARGET = ["-e", "ssh_host=127.0.0.1", "-e", "user=ops", "-e", "trust_first_use=true"]


@pytest.mark.parametrize("run_id", ["../x", "/etc", "a/b", ".hidden", ".."])
def test_a_run_id_is_a_name_never_a_path(
    run_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "run.json").write_text("{}")  # a run the path would lead to, outside the root
    root = tmp_path / "runs"
    code = main(["run", str(SERIAL), "--journal", str(root), "--resume", run_id, "-e", f"console_url={URL}", *TARGET])
    assert code == 2
    assert "is not a run id: a run id is a name" in capsys.readouterr().err


def test_two_processes_cannot_run_one_run(tmp_path: Path) -> None:
    first = Journal.create(tmp_path / "runs")
    first.lock_run()
    second = Journal(first.directory)  # what a second `--resume` of the same run opens
    with pytest.raises(UsageError, match=f"run {first.run_id} is being run by another process \\(run "
                       f"{first.run_id} \\(pid {os.getpid()}\\)\\)"):
        second.lock_run()
    first.unlock()
    second.lock_run()
    second.unlock()


def test_a_second_run_against_the_same_vm_is_refused_naming_the_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "runs"
    first = Journal.create(root)
    first.lock_target(root, "ssh:ops@127.0.0.1", "ops@127.0.0.1")
    monkeypatch.setenv("RECOVERY_CONSOLE_PASSWORD", "unused-here")
    monkeypatch.setenv("RECOVERY_KEYS_DIR", str(tmp_path / "keys"))
    try:
        code = main(["run", str(SERIAL), "--journal", str(root), "-e", f"console_url={URL}", *TARGET])
    finally:
        first.unlock()
    assert code == 2
    err = capsys.readouterr().err
    assert f"another run is recovering ops@127.0.0.1: run {first.run_id} (pid {os.getpid()})" in err
    assert sorted(p.name for p in root.iterdir()) == sorted([".targets", first.run_id]), "no empty run left behind"
    assert not (tmp_path / "keys").exists(), "nothing was done"


def test_a_second_run_against_the_same_server_in_the_same_cloud_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "runs"
    first = Journal.create(root)
    first.lock_target(root, "server:mycloud:web-1", "server web-1 in cloud mycloud")
    monkeypatch.setenv("RECOVERY_CONSOLE_PASSWORD", "unused-here")
    # The pre-flight reads clouds.yaml before any lock is taken: the cloud must exist there.
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text("clouds:\n  mycloud:\n    auth_type: none\n    compute_endpoint_override: http://127.0.0.1:9\n")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    try:
        code = main(["run", str(SERIAL), "--journal", str(root), "--cloud", "mycloud", "-e", "server=web-1",
                     "-e", "user=ops"])
    finally:
        first.unlock()
    assert code == 2
    assert f"another run is recovering server web-1 in cloud mycloud: run {first.run_id}" in capsys.readouterr().err


def test_the_console_url_can_come_from_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret_file = tmp_path / "url"
    secret_file.write_text(URL + "\n")
    code = main(["run", str(SERIAL), "--dry-run", "--journal", str(tmp_path / "runs"),
                 "-e", f"console_url=@{secret_file}", *TARGET])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "ws://127.0.0.1:9/?token=***" in captured.out
    assert TOKEN not in captured.out + captured.err
    assert "process list" not in captured.err


def test_the_console_url_can_come_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECOVERY_CONSOLE_URL", URL)
    code = main(["run", str(SERIAL), "--dry-run", "--journal", str(tmp_path / "runs"), *TARGET])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "input console_url: from RECOVERY_CONSOLE_URL" in captured.err
    assert "ws://127.0.0.1:9/?token=***" in captured.out
    assert TOKEN not in captured.out + captured.err


def test_a_console_url_on_the_command_line_works_with_a_note_about_ps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(SERIAL), "--dry-run", "--journal", str(tmp_path), "-e", f"console_url={URL}", *TARGET]) == 0
    err = capsys.readouterr().err
    assert "note: -e console_url=... is visible to every local user in the process list; use " \
           "-e console_url=@FILE or RECOVERY_CONSOLE_URL" in err


def test_an_unreadable_input_file_is_exit_two(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", str(SERIAL), "--dry-run", "-e", f"console_url=@{tmp_path / 'missing'}", *TARGET])
    assert code == 2
    assert str(tmp_path / "missing") in capsys.readouterr().err


def test_run_turns_core_dumps_off() -> None:
    """In a child: the limit and the dumpable flag are per process, and irreversible."""
    probe = (
        "import ctypes, resource, sys\n"
        "from recovery.cli.main import main\n"
        f"main(['run', {str(SERIAL)!r}, '--dry-run', '-e', 'console_url={URL}', "
        "'-e', 'ssh_host=127.0.0.1', '-e', 'user=ops', '-e', 'trust_first_use=true'])\n"
        "print(resource.getrlimit(resource.RLIMIT_CORE), ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "(0, 0) 0"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stop_signal_cleans_up_writes_the_report_and_exits_130(signum: signal.Signals, tmp_path: Path) -> None:
    """A console that accepts the connection and never answers: the run waits in console.open."""
    silent = socket.create_server(("127.0.0.1", 0))
    url = f"ws://127.0.0.1:{silent.getsockname()[1]}/?token={TOKEN}"
    process = subprocess.Popen(
        [sys.executable, "-m", "recovery", "run", str(SERIAL), "--journal", str(tmp_path / "runs"), *TARGET],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "RECOVERY_CONSOLE_URL": url, "RECOVERY_CONSOLE_PASSWORD": "unused-here",
             "RECOVERY_KEYS_DIR": str(tmp_path / "keys")},
    )
    try:
        assert process.stderr is not None
        seen = []
        for line in process.stderr:
            seen.append(line)
            if "] console:" in line:
                break
        process.send_signal(signum)
        out, rest = process.communicate(timeout=60)
    finally:
        process.kill()
        silent.close()
    err = "".join(seen) + rest
    assert process.returncode == 130, err
    run_dir = next((tmp_path / "runs").glob("2*"))
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    report = json.loads((run_dir / "report.json").read_text())
    assert report["status"] == "interrupted"
    assert report["failed_step"] == "console"
    assert "INTERRUPTED" in out
    assert f"report: {run_dir / 'report.md'}\n" in err
    # A complete command, to paste: this playbook, this run, this journal (the console URL comes from
    # RECOVERY_CONSOLE_URL again, so it is not asked for).
    assert f" run {SERIAL} --resume {run_dir.name} --journal {tmp_path / 'runs'}\n" in err
    assert "cleanup done (newest first): " in err
    assert TOKEN not in err + out + "".join(p.read_text() for p in run_dir.rglob("*") if p.is_file())


def test_a_secret_too_short_to_mask_turns_debug_output_and_the_transcript_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    book = tmp_path / "book.yaml"
    book.write_text(
        "inputs:\n  console_url: {type: string, sensitive: true}\n"
        "secrets:\n  pw: {env: TEST_SHORT_PW}\n"
        "steps:\n  - id: console\n    uses: console.open\n    with: {url: '{{ inputs.console_url }}'}\n"
        "  - id: login\n    uses: console.login\n    with: {user: ops, password: '{{ secrets.pw }}'}\n"
    )
    monkeypatch.setenv("TEST_SHORT_PW", "ab1")
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: the console step fails at once
    code = main(["-vv", "run", str(book), "--journal", str(tmp_path / "runs"),
                 "-e", f"console_url=ws://127.0.0.1:{port}/?token={TOKEN}"])
    logging.getLogger("recovery.channels.dialogue").debug("recv 'Password: ab1'")  # what -vv would show of console I/O
    logging.getLogger("recovery.channels.dialogue").info("still said: info")
    logging.getLogger().handlers.clear()
    err = capsys.readouterr().err
    assert code == 1, err
    assert "debug output is off for this run: a secret shorter than 4 characters" in err
    assert "Password: ab1" not in err
    assert "still said: info" in err
    run_dir = next((tmp_path / "runs").glob("2*"))
    assert not (run_dir / "transcript.log").exists()
    notes = json.loads((run_dir / "report.json").read_text())["notes"]
    assert any("no transcript and no debug output were kept" in note and "secrets.pw" in note for note in notes)


def test_the_resume_hint_asks_again_for_a_sensitive_input_given_on_the_command_line(tmp_path: Path) -> None:
    from recovery.cli.hints import resume_command
    from recovery.engine.playbook import load_playbook

    secret_file = tmp_path / "pw"
    command = resume_command(
        load_playbook(SERIAL), "20261206T000000Z-abcdef", journal_root=Path("runs"), cloud="mycloud", config=None,
        given={"console_url": "ws://h/?token=t0k3n", "user": "ops"}, secret_files=[f"console_password=@{secret_file}"],
        environ={},
    )
    assert command.endswith(
        f"run {SERIAL} --resume 20261206T000000Z-abcdef --journal {Path('runs').absolute()} --cloud mycloud "
        f"-e console_url=@FILE --secret console_password=@{secret_file}"
    )
    assert "t0k3n" not in command
