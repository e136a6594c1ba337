"""VNC Authentication's DES answer, against vectors from OpenSSL's own DES.

The vectors come from `openssl enc -des-ecb -nopad -provider legacy -provider default -K KEY`
with KEY the password's bytes bit-reversed, so they do not depend on the `cryptography`
version under test: the floors job runs this file with the oldest `cryptography` we declare,
where the DES cipher lives in a different module than in today's.
"""

from __future__ import annotations

import pytest

from recovery.channels.vnc import vnc_response

CHALLENGE = b"0123456789abcdef"


@pytest.mark.parametrize(
    ("password", "answer"),
    [
        # key cea6c64ea62e0000: "secret" NUL-padded, each byte's bits reversed
        ("secret", "752440ee2bfcc2a0d9013fd20371e23b"),
        # key 0000000000000000: an empty password is eight NUL bytes
        ("", "a068dbeab73d140b56541eb3c7625177"),
    ],
)
def test_the_answer_is_the_challenge_des_encrypted_with_the_bit_reversed_password(password: str, answer: str) -> None:
    assert vnc_response(CHALLENGE, password).hex() == answer


def test_only_the_first_eight_characters_of_the_password_count() -> None:
    assert vnc_response(CHALLENGE, "secretXY") == vnc_response(CHALLENGE, "secretXY-and-more")
    assert vnc_response(CHALLENGE, "secretXY") != vnc_response(CHALLENGE, "secretX")
