"""The console conversation: login states, wrong passwords, leftovers from an interrupted run."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

import pytest

from recovery.channels.dialogue import ConsoleSession, LoginResult, TerminalText, normalize, same_user
from recovery.channels.vnc import keys_for
from recovery.engine.config import Config
from recovery.engine.context import SharedState, StepContext
from recovery.engine.journal import Journal
from recovery.engine.report import RunReport
from recovery.errors import ChannelError, LoginRejected
from recovery.safety.redact import Secret, Text, reveal
from recovery.steps.console import LoginParams
from recovery.steps.console import login as login_step
from tests.unit.fake_console import CURSOR_ANSWER, FakeConsole, Guest, transcripts

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
    conversation.login("ops", PASSWORD, timeout=5)
    conversation.logout(timeout=2)
    assert console.sent[-1] == "exit\r"
    assert console.state == "login"
    assert not conversation.shell_may_be_open


def test_logout_types_nothing_where_no_shell_was_opened() -> None:
    console = FakeConsole(password="something-else")
    conversation, _ = session(console)
    with pytest.raises(LoginRejected):
        conversation.login("ops", PASSWORD, timeout=5)
    typed = list(console.sent)
    conversation.logout(timeout=2)
    assert console.sent == typed  # no `exit` typed into the login prompt as a user name


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


# -- real login transcripts, cut everywhere -------------------------------------------------------

GUESTS = transcripts()
WRONG = Secret("wrong-pass", "<password>")


def log_in(console: FakeConsole, password: Secret = PASSWORD) -> LoginResult:
    return ConsoleSession(console).login(console.guest.user, password, timeout=10)


def check(guest: Guest, console: FakeConsole) -> None:
    """The login ends as the transcript says it must, wherever its output was cut."""
    password = Secret(guest.password, "<password>")
    if guest.outcome == "shell":
        result = log_in(console, password)
        assert same_user(guest.user, result.user)
        assert not result.already_logged_in
    else:
        with pytest.raises(LoginRejected, match="went back to the login prompt"):
            log_in(console, password)
    assert console.sent.count(guest.password + "\r") == 1


def stream_length(guest: Guest, password: str) -> int:
    """How many characters the console prints in a whole login (identity check included)."""
    console = FakeConsole(guest=guest)
    with contextlib.suppress(LoginRejected):
        log_in(console, Secret(password))
    return console.emitted


@pytest.mark.parametrize("guest", GUESTS, ids=lambda guest: guest.name)
def test_a_real_transcript_logs_in_as_it_must(guest: Guest) -> None:
    check(guest, FakeConsole(guest=guest))


@pytest.mark.parametrize("pause", [False, True], ids=["cut", "cut-and-pause"])
@pytest.mark.parametrize("guest", GUESTS, ids=lambda guest: guest.name)
def test_a_real_transcript_cut_at_every_offset_logs_in_as_it_must(guest: Guest, pause: bool) -> None:
    """One cut at each offset of the whole output; with a pause, the console falls quiet there too."""
    for cut in range(1, stream_length(guest, guest.password)):
        console = FakeConsole(guest=guest, cuts=[cut], pause_at_cuts=pause)
        try:
            check(guest, console)
        except (AssertionError, LoginRejected, ChannelError) as failure:
            raise AssertionError(f"cut at {cut}: {console.sent!r}") from failure


@pytest.mark.parametrize("guest", GUESTS, ids=lambda guest: guest.name)
def test_a_real_transcript_in_one_character_pieces_logs_in_as_it_must(guest: Guest) -> None:
    check(guest, FakeConsole(guest=guest, cuts=range(1, stream_length(guest, guest.password))))


@pytest.mark.parametrize("guest", GUESTS, ids=lambda guest: guest.name)
def test_a_wrong_password_is_rejected_wherever_the_output_was_cut(guest: Guest) -> None:
    for cut in range(1, stream_length(guest, "wrong-pass")):
        console = FakeConsole(guest=guest, cuts=[cut], pause_at_cuts=cut % 2 == 0)
        with pytest.raises(LoginRejected, match="rejected the login"):
            log_in(console, WRONG)
        assert console.sent[-1] == "wrong-pass\r", f"cut at {cut}: typed after the refusal: {console.sent!r}"


def test_last_login_cut_after_its_colon_is_not_a_login_prompt() -> None:
    """The bug seen on a QEMU VM: output cut right after `Last login:` ended in "password is wrong"."""
    guest = next(guest for guest in GUESTS if guest.name == "debian12-motd-last-login")
    whole = guest.wake + "ops\r\n" + guest.password_prompt + guest.after_password
    cut = whole.index("Last login:") + len("Last login: ")
    result = log_in(FakeConsole(guest=guest, cuts=[cut], pause_at_cuts=True))
    assert result.user == "ops"


def test_busybox_cursor_queries_are_answered_wherever_they_were_cut() -> None:
    guest = next(guest for guest in GUESTS if guest.name == "alpine-busybox")
    for cut in range(1, stream_length(guest, guest.password)):
        console = FakeConsole(guest=guest, cuts=[cut])
        log_in(console)
        assert console.cursor_queries > 0
        assert console.sent.count(CURSOR_ANSWER) == console.cursor_queries, f"cut at {cut}"


def test_an_sssd_name_with_its_domain_is_the_same_user() -> None:
    """A shell found open is asked who it is; SSSD prints the login `alice` as `alice@corp.example`."""
    guest = next(guest for guest in GUESTS if guest.name == "sssd-fully-qualified")
    result = log_in(FakeConsole(guest=guest, state="shell"))
    assert result.user == "alice@corp.example"
    assert result.already_logged_in
    assert result.logged_out_other_user is None


def test_a_shell_our_own_password_login_opened_is_not_asked_who_it_is() -> None:
    """login(1) started it for the name we typed; asking costs a typed command (a second on QEMU's VNC)."""
    guest = next(guest for guest in GUESTS if guest.name == "sssd-fully-qualified")
    console = FakeConsole(guest=guest)
    result = log_in(console)
    assert result.user == "alice"
    assert not result.already_logged_in
    assert not any("id -un" in sent for sent in console.sent)


@pytest.mark.parametrize(
    ("login", "shown", "same"),
    [
        ("ops", "ops", True),
        ("alice", "alice@corp.example", True),
        ("alice@corp.example", "alice", True),
        ("alice", "CORP\\alice", True),
        ("Alice", "alice@CORP.EXAMPLE", True),
        ("alice@corp.example", "alice@other.example", False),
        ("alice", "alicia@corp.example", False),
        ("ops", "root", False),
        ("Ops", "ops", False),  # local names are case-sensitive: two accounts
        ("alice", "@corp.example", False),
    ],
)
def test_same_user(login: str, shown: str, same: bool) -> None:
    assert same_user(login, shown) is same


def test_a_shell_that_stays_another_users_is_marked_open_so_it_is_logged_out() -> None:
    """`id -un` keeps naming someone else even after `exit`: the login fails with a shell open."""
    console = FakeConsole(state="shell", shell_user="root")
    console.guest = dataclasses.replace(console.guest, shell_user="root")  # a login as ops lands in root's shell
    conversation, _ = session(console)
    with pytest.raises(LoginRejected, match="even after logging 'root' out"):
        conversation.login("ops", PASSWORD, timeout=5)
    assert conversation.shell_may_be_open
    conversation.logout(timeout=2)
    assert console.sent[-1] == "exit\r"
    assert console.state == "login"


@pytest.mark.parametrize(
    ("pieces", "text"),
    [
        (["\x1b[?20", "04hops@vm:~$ "], "ops@vm:~$ "),
        (["\x1b", "[", "?", "2004l", "\r", "\n"], "\n"),
        (["a\r", "\nb"], "a\nb"),
        (["\x1b]0;ti", "tle\x07$ "], "$ "),
        (["vm login: [   12.3", "45678] random: crng init done\r", "\n"], "vm login: "),
        (["[ops@vm ~]$ "], "[ops@vm ~]$ "),
        (["[   1.0] not a kernel message\n"], "[   1.0] not a kernel message\n"),
    ],
)
def test_terminal_text_does_not_depend_on_where_output_was_cut(pieces: list[str], text: str) -> None:
    screen = TerminalText()
    assert "".join(screen.feed(piece)[0] for piece in pieces) == text


def test_a_cursor_query_cut_in_two_is_still_counted() -> None:
    screen = TerminalText()
    assert [screen.feed(piece)[1] for piece in ("~ $ \x1b[", "6n")] == [0, 1]


def step_context(tmp_path: Path, console: FakeConsole) -> StepContext:
    journal = Journal.create(tmp_path)
    return StepContext(
        run_id=journal.run_id, run_dir=journal.directory, journal=journal, config=Config(),
        report=RunReport(journal.run_id, "test"), shared=SharedState(console=ConsoleSession(console)),
        deadline=time.monotonic() + 30,
    )


def test_the_login_step_that_fails_in_a_shell_leaves_its_logout_behind(tmp_path: Path) -> None:
    """console.login failed after reaching a shell (another user's, which would not go): the run's
    cleanup still logs it out."""
    console = FakeConsole(state="shell", shell_user="root")
    console.guest = dataclasses.replace(console.guest, shell_user="root")
    ctx = step_context(tmp_path, console)
    with pytest.raises(LoginRejected):
        login_step(ctx, LoginParams(user="ops", password=PASSWORD))
    assert [cleanup.description for cleanup in ctx.shared.cleanups] == ["logged out of the console"]
    ctx.shared.cleanups[0].action()
    assert console.sent[-1] == "exit\r"
    assert console.state == "login"


def test_the_login_step_reports_a_directory_name_for_the_same_account(tmp_path: Path) -> None:
    guest = next(guest for guest in GUESTS if guest.name == "sssd-fully-qualified")
    ctx = step_context(tmp_path, FakeConsole(guest=guest, state="shell"))
    outputs = login_step(ctx, LoginParams(user="alice", password=PASSWORD))
    assert outputs["user"] == "alice@corp.example"
    assert any("same account as 'alice'" in note for note in ctx.report.notes)


def test_the_login_step_reports_a_console_found_already_logged_in(tmp_path: Path) -> None:
    ctx = step_context(tmp_path, FakeConsole(state="shell"))
    outputs = login_step(ctx, LoginParams(user="ops", password=PASSWORD))
    assert outputs["already_logged_in"] is True
    assert "the console was found already logged in as ops: no password was typed" in ctx.report.notes
