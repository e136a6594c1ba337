"""Typing on QEMU: bursts acknowledged by the guest's Num Lock light, and what happens without it."""

from __future__ import annotations

import pytest

from recovery.channels import vnc
from recovery.errors import ChannelTimeout
from recovery.safety.redact import Secret
from tests.unit.fake_qemu_vnc import FakeQemuVnc

BURST = 63  # key events: 31 unshifted characters
# A burst, its Num Lock press and release, and the release before it, still queued when the light switched
# (the key-ups sent on connecting, 54, fit too).
QUEUE = BURST + 3
QEMU_KEY_EVENT_SIZE = 12  # bytes of one QEMU Extended Key Event message
TEXT = "".join(chr(code) for code in range(0x20, 0x7F)) * 4 + "\r"


def opened(qemu: FakeQemuVnc) -> vnc.VncChannel:
    channel = vnc.VncChannel(Secret(f"vnc://127.0.0.1:{qemu.port}"))
    channel.open(timeout=10)
    return channel


@pytest.fixture
def small_bursts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bursts and a queue scaled down together, so a test types several bursts in a second or two."""
    monkeypatch.setattr(vnc, "QEMU_EVENTS_PER_ACK", BURST)


def test_every_burst_waits_for_the_guest_so_qemu_drops_nothing(small_bursts: None) -> None:
    with FakeQemuVnc(queue_limit=QUEUE, delay=0.0005) as qemu:
        channel = opened(qemu)
        try:
            assert channel.slow_keyboard
            assert channel.guest_acks
            channel.send(TEXT)
        finally:
            channel.close()
        qemu.wait_idle()
        assert (qemu.typed, qemu.dropped) == (TEXT, 0)
        assert qemu.leds == 0, "Num Lock is left as it was found"


def test_the_same_text_sent_at_once_overflows_the_fake(small_bursts: None) -> None:
    """The fake can fail: without waiting for the guest, its queue overflows and keys are lost."""
    with FakeQemuVnc(queue_limit=QUEUE, delay=0.01) as qemu:  # a guest slower than the wire, however busy the machine
        channel = opened(qemu)
        events = channel._key_events(vnc.keys_for(TEXT))
        expected = qemu.received + len(events) // QEMU_KEY_EVENT_SIZE  # after the key-ups and probe of opening
        try:
            channel._send(events)
            # Not a barrier: an update the screen read asked for may still be on its way and answer it
            # early, and closing with it unread resets the connection before QEMU has read the keys.
            qemu.wait_received(expected)
        finally:
            channel.close()
        qemu.wait_idle()
        assert qemu.received == expected
        assert qemu.dropped > 0
        assert qemu.typed != TEXT


def test_a_guest_that_does_not_answer_gets_one_key_per_barrier(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vnc, "LED_PROBE_TIMEOUT", 0.3)
    with FakeQemuVnc(queue_limit=200, delay=0.001, answered_presses=0) as qemu:
        channel = opened(qemu)
        try:
            assert channel.slow_keyboard
            assert not channel.guest_acks
            channel.send("Ab~\r")
        finally:
            channel.close()
        qemu.wait_idle()
        assert (qemu.typed, qemu.dropped) == ("Ab~\r", 0)


def test_a_guest_that_stops_answering_is_a_timeout_naming_the_keys(
    small_bursts: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vnc, "SYNC_TIMEOUT", 0.5)
    monkeypatch.setattr(vnc, "QEMU_ACK_PER_EVENT", 0.001)
    # Two presses for the probe on connecting, one for the first burst; then nothing.
    with FakeQemuVnc(queue_limit=1000, delay=0.0005, answered_presses=3) as qemu:
        channel = opened(qemu)
        try:
            with pytest.raises(ChannelTimeout, match=r"stopped taking keys.*last 31 characters.*nothing after"):
                channel.send("x" * 100)
        finally:
            channel.close()
        qemu.wait_idle()
        assert qemu.typed == "x" * 62, "no burst goes before the one ahead of it is acknowledged"
