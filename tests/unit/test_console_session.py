"""The console conversation: login states, wrong passwords, leftovers from an interrupted run."""

from __future__ import annotations

import pytest

from recovery.channels.vnc import keys_for
from recovery.console import ConsoleSession, normalize
from recovery.errors import ChannelError, LoginRejected
from recovery.redact import Secret, Text, reveal
from tests.unit.fake_console import FakeConsole

PASSWORD = Secret("s3cret-pass", "<password>")


def session(console: FakeConsole) -> tuple[ConsoleSession, list[str]]:
    transcript: list[str] = []
    return ConsoleSession(console, transcript.append), transcript


def test_login_from_the_login_prompt_confirms_the_user() -> None:
    console = FakeConsole()
    conversation, transcript = session(console)
    result = conversation.login("ops", PASSWORD, timeout=5)
    assert result.user == "ops"
    assert not result.already_logged_in
    assert "s3cret-pass" not in "".join(transcript)
    assert "<password>" in "".join(transcript)


def test_an_open_shell_is_used_as_it_is() -> None:
    console = FakeConsole(state="shell")
    conversation, _ = session(console)
    result = conversation.login("ops", PASSWORD, timeout=5)
    assert result.already_logged_in
    assert not any("s3cret-pass" in sent for sent in console.sent)


def test_a_shell_of_another_user_is_logged_out_first() -> None:
    console = FakeConsole(state="shell", shell_user="root")
    conversation, _ = session(console)
    result = conversation.login("ops", PASSWORD, timeout=5)
    assert result.logged_out_other_user == "root"
    assert result.user == "ops"


def test_a_wrong_password_stops_and_types_nothing_after_it() -> None:
    console = FakeConsole(password="something-else")
    conversation, _ = session(console)
    with pytest.raises(LoginRejected, match="Login incorrect"):
        conversation.login("ops", PASSWORD, timeout=5)
    assert console.sent[-1] == "s3cret-pass\r"


def test_a_half_typed_heredoc_from_an_interrupted_run_is_abandoned() -> None:
    console = FakeConsole(state="heredoc")
    conversation, _ = session(console)
    result = conversation.login("ops", PASSWORD, timeout=5)
    assert "\x03" in console.sent
    assert result.already_logged_in


def test_a_script_runs_through_a_heredoc_and_its_status_is_read_from_the_marker() -> None:
    console = FakeConsole(state="shell", script_status=3, script_output="RCV-x added=yes\r\n")
    conversation, _ = session(console)
    url = Secret("http://127.0.0.1:1/very-secret-path", "http://127.0.0.1:1/***")
    result = conversation.run_script(
        ["echo one", url], delimiter="RECOVERY_SCRIPT_abcd", nonce="abcd", timeout=5
    )
    assert result.status == 3
    assert "RCV-x added=yes" in result.output
    assert conversation.typed[1] == "echo one"
    assert conversation.typed[2] == "http://127.0.0.1:1/***"
    assert conversation.typed[0].startswith(" unset HISTFILE; sh <<'RECOVERY_SCRIPT_abcd'")


def test_normalize_strips_escapes_and_folds_line_endings() -> None:
    assert normalize("\x1b[?2004hops@vm:~$ ls\r\r\nfile\r\n\x1b]0;title\x07") == "ops@vm:~$ ls\n\nfile\n"


def test_a_password_prompt_left_by_another_login_never_gets_our_password() -> None:
    console = FakeConsole(state="password")
    conversation, _ = session(console)
    result = conversation.login("ops", PASSWORD, timeout=5)
    assert result.user == "ops"
    # the wake-up Enter ends the stale attempt; our password goes only after our user name
    assert console.sent.count("s3cret-pass\r") == 1
    assert console.sent.index("ops\r") < console.sent.index("s3cret-pass\r")


def test_logout_leaves_no_shell_open() -> None:
    console = FakeConsole(state="shell")
    conversation, _ = session(console)
    conversation.logout(timeout=2)
    assert console.sent[-1] == "exit\r"
    assert console.state == "login"


class BlindKeyboard:
    """A console like VNC's: no text comes back, and only what has a key on a US layout can be typed."""

    has_output = False

    def __init__(self) -> None:
        self.sent: list[str] = []

    def open(self, timeout: float) -> None:
        return None

    def check_typeable(self, data: Text) -> None:
        keys_for(data)

    def send(self, data: Text) -> None:
        self.sent.append(reveal(data))

    def read(self, timeout: float) -> str:
        return ""

    def close(self) -> None:
        return None


def test_a_password_the_console_cannot_type_stops_the_login_before_any_key_without_showing_it() -> None:
    keyboard = BlindKeyboard()
    with pytest.raises(ChannelError, match=r"console password.*not shown.*Nothing was typed") as caught:
        ConsoleSession(keyboard).login("ops", Secret("pässwörd"), timeout=5)
    assert keyboard.sent == []
    assert "ä" not in str(caught.value)


def test_a_script_line_the_console_cannot_type_stops_before_the_first_line() -> None:
    keyboard = BlindKeyboard()
    with pytest.raises(ChannelError, match=r"'é'.*Nothing was typed"):
        ConsoleSession(keyboard).run_script(["echo ok", "echo café"], delimiter="RCV_END", nonce="n1", timeout=5)
    assert keyboard.sent == []
