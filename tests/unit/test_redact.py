"""The scrubber: every registered secret leaves every text and log line, as terminals and libraries mangle it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import quote_plus

import pytest

from recovery.cli.log import setup_logging
from recovery.publishers.local_http import LocalHTTPPublisher
from recovery.publishers.swift import _register_signature
from recovery.safety.redact import MASK, Secret, masked_url, register, scrub, too_short_to_mask

PASSWORD = "Wrap-Me-Around-80"


@pytest.fixture(autouse=True)
def _password() -> None:
    register(PASSWORD)


@pytest.mark.parametrize(
    "echoed",
    [
        "Wrap-Me-Aro \rund-80",  # bash's wrap at the last column: a space, then a carriage return
        "Wrap-Me-Aro\r\nund-80",  # a serial console's hard wrap
        "Wrap-Me-Aro\r\r\nund-80",
        "W\x1b[1mrap-Me-Around\x1b[0m-80",  # colour changes inside the echo
        "Wrap-Me\x1b[?2004l\x1b[K-Around-80",  # bracketed paste off, erase to end of line
        "Wrap-\x1b]0;ops@vm: ~\x07Me-Around-80",  # a window title set in the middle (BEL)
        "Wrap-\x1b]0;ops@vm: ~\x1b\\Me-Around-80",  # ... ended by ST
        "Wrap-Me-Around-8\x1b[24;1H0",  # a cursor move
    ],
)
def test_a_secret_split_by_terminal_noise_is_still_masked(echoed: str) -> None:
    scrubbed = scrub(f"login: ops\r\nPassword: {echoed}\r\n$ ")
    assert scrubbed == f"login: ops\r\nPassword: {MASK}\r\n$ "


def test_noise_around_a_secret_stays_and_other_text_is_untouched() -> None:
    text = "\x1b[32mok\x1b[0m Wrap-Me-Around-80 \x1b]0;title\x07 Wrap-Me-Around-8"
    assert scrub(text) == f"\x1b[32mok\x1b[0m {MASK} \x1b]0;title\x07 Wrap-Me-Around-8"


def test_a_secret_inside_a_window_title_is_masked() -> None:
    assert scrub(f"\x1b]0;{PASSWORD}\x07$ ") == f"\x1b]0;{MASK}\x07$ "


def test_overlapping_and_repeated_secrets_become_one_mask_each() -> None:
    register("Around-80-and-more")
    assert scrub("Wrap-Me-Around-80-and-more, Wrap-Me-Around-80.") == f"{MASK}, {MASK}."


def test_hostile_console_output_is_scrubbed_in_linear_time() -> None:
    """Unterminated OSC openers, unfinished CSI parameters and near-misses of the secret, in bulk.

    The regex this replaced needed minutes for this text (quadratic backtracking); the bound
    is loose on purpose: it catches a hang, it does not measure speed (benchmarks/scrub.py does).
    """
    hostile = ("W\x1b]" * 130_000) + ("Wrap-Me-Around-8\r" * 5_000) + ("\x1b[1;1;1;1" * 10_000)
    started = time.monotonic()
    scrubbed = scrub(hostile + PASSWORD)
    assert time.monotonic() - started < 10
    assert scrubbed.endswith(MASK)


def test_secrets_shorter_than_four_characters_are_not_scrubbed_but_flagged() -> None:
    Secret("abc")
    assert scrub("abc abcd") == "abc abcd"  # masking would hit ordinary words, and reveal it by doing so
    assert too_short_to_mask(Secret("abc"))
    assert not too_short_to_mask("")
    assert not too_short_to_mask("abcd")


def test_a_sensitive_value_that_is_not_a_url_is_masked_whole() -> None:
    assert masked_url("hunter2-but-longer") == MASK
    assert masked_url("ws://h:99999/x") == MASK  # not a URL after all: a port out of range
    assert masked_url("ws://h:6083/?token=abc") == "ws://h:6083/?token=***"


def test_a_token_in_a_url_path_is_masked_and_ordinary_path_segments_stay() -> None:
    token = "3f2b9c1e-6f0a-4c8e-9d2b-7a1e5c4f8b90"
    assert masked_url(f"wss://console.example:443/serial/{token}/attach") == "wss://console.example:443/serial/***/attach"
    assert masked_url("http://h:6080/vnc_auto.html?path=websockify") == "http://h:6080/vnc_auto.html?path=***"


def test_credentials_inside_a_secret_url_are_scrubbed_on_their_own() -> None:
    Secret("http://h:6080/vnc_auto.html?path=websockify%3Ftoken%3Dnovnc-token-1&password=vnc-pass-1")
    Secret("vnc://:vnc-pass-2@127.0.0.1:5900")
    assert scrub("novnc-token-1 vnc-pass-1 vnc-pass-2") == f"{MASK} {MASK} {MASK}"


# -- every secret shape, in the log at -vv and -vvv ----------------------------------------------------------


@pytest.fixture
def http_token() -> Iterator[str]:
    """The token in a real local HTTP publisher's one-shot URL."""
    with LocalHTTPPublisher() as publisher:
        published = publisher.publish("key", b"ssh-ed25519 AAAA k\n", timedelta(minutes=1))
        yield published.url.reveal().rsplit("/", 1)[1]


def _shapes(http_token: str) -> list[tuple[str, str, str]]:
    """(logger, what the library logs, the secret inside it) for every kind of secret a run holds."""
    console_url = "wss://nova.example:6083/?token=3b1f6a1e-console-token"
    Secret(console_url, masked_url(console_url))  # how -e console_url=... arrives (sensitive input)
    swift_sig = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    _register_signature(swift_sig)  # what the Swift publisher does with the TempURL it signs
    swift_key = "account-temp-url-key-1"
    register(swift_key)  # the Swift publisher registers the key it reads from the account headers
    s3_sig = "4f2e3c1b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f"
    register(s3_sig)  # the S3 publisher registers the X-Amz-Signature of every presigned URL
    vnc_password = "vnc-Pa55"
    Secret(vnc_password, "<vnc_password>")  # from --secret vnc_password=@FILE
    return [
        ("recovery.channels.dialogue", f"recv 'Password: '; typed {PASSWORD}\\r", PASSWORD),
        ("recovery.channels.serial_ws", f"connecting to {console_url}", "3b1f6a1e-console-token"),
        ("keystoneauth.session", f"REQ: curl -g -i -X GET https://swift/v1/AUTH_x/c/o?temp_url_sig={swift_sig}",
         swift_sig),
        ("keystoneauth.session", f"RESP: [204] X-Account-Meta-Temp-Url-Key: {swift_key}", swift_key),
        ("urllib3.connectionpool", f"GET /c/o?temp_url_sig={quote_plus(swift_sig)}&temp_url_expires=1", swift_sig),
        ("botocore.endpoint", f"Making request: https://s3/b/k?X-Amz-Signature={s3_sig}", s3_sig),
        ("recovery.publishers.local_http", f"GET /{http_token} 200", http_token),
        ("recovery.channels.vnc", f"VNC auth with {vnc_password}", vnc_password),
    ]


@pytest.mark.parametrize("verbosity", [2, 3])
def test_no_secret_shape_reaches_the_log_at_any_verbosity(
    verbosity: int, http_token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    shapes = _shapes(http_token)
    setup_logging(verbosity)
    try:
        for name, message, _ in shapes:
            logging.getLogger(name).debug(message)
            logging.getLogger(name).warning("failed: %s", message)
    finally:
        logging.getLogger().handlers.clear()
    err = capsys.readouterr().err
    for name, _, secret in shapes:
        assert secret not in err, (verbosity, name)
        assert f"WARNING {name}: failed: " in err
    shown = {name for name, _, _ in shapes if f"DEBUG {name}:" in err}
    third_party = {"keystoneauth.session", "urllib3.connectionpool", "botocore.endpoint"}
    assert shown & third_party == (third_party if verbosity == 3 else set()), "libraries log DEBUG only at -vvv"
