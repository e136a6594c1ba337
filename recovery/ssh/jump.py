"""Jump hosts (bastions), as OpenSSH's ``ProxyJump``: one or more hops, each its own login.

A VM behind a bastion is reached by logging in to the bastion and asking its sshd for a
``direct-tcpip`` channel to the VM (``ssh -J``); the SSH session to the VM runs inside that
channel, end to end, so the bastion never sees the VM's session keys. With several hops each
one is reached through the one before it.

Every hop is a full login (`recovery.ssh.verifier.connect`): its own user, key and host key pin,
the pin checked exactly as the VM's is (a jump host is no more trusted than a VM: a wrong key
is refused). A failure at a hop keeps its class (`HostKeyMismatch`, `AuthRejected`...) and its
message starts with ``jump host user@host:port:``, so nobody reads a bastion's refusal as the
VM's.

The text forms are OpenSSH's and the playbook inputs': ``jump`` is ``user@host:port`` hops
separated by commas (``host`` alone means port 22; an IPv6 address goes in brackets),
``jump_keys`` and ``jump_host_keys`` are comma-separated lists in the same order (one value
for all hops, or empty: the VM's key, and no pin).

The fleet commands (audit, revoke) share bastion logins between their VMs (`JumpPool`,
`shared_logins`): a few logins to a bastion per run, a channel per VM, as ``ControlMaster``.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from recovery.errors import (
    AuthRejected,
    ConnectionRefused,
    ConnectTimeout,
    HostKeyMismatch,
    HostKeyUnknown,
    KeyGenerationError,
    VerifyError,
)

if TYPE_CHECKING:
    from paramiko import Channel, Transport

    from recovery.safety.redact import Secret
    from recovery.ssh.hostkeys import KnownHosts, KnownHostsAppender
    from recovery.ssh.keys import KeyPair

__all__ = [
    "JumpHop", "JumpPool", "check_jump", "check_jump_inputs", "check_jump_lists", "check_jump_pins", "hops_from_flags",
    "parse_jumps", "shared_logins", "tunnel", "with_host_keys",
]

_HOP = re.compile(
    r"(?:(?P<user>[^@\s,]+)@)?(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9._-]+))(?::(?P<port>\d+))?"
)
PREFIX = "jump host "


@dataclass(frozen=True)
class JumpHop:
    """One bastion on the way. No `private_key_path`: the key the VM is reached with.

    `revoked_host_keys` are never accepted (a known_hosts file's `@revoked`, `with_host_keys`);
    `record`: where a key trusted on first use is appended (`--accept-new`, `with_host_keys`),
    not part of the hop's identity, so the logins are shared as before.
    """

    host: str
    port: int
    user: str
    private_key_path: str | None = None
    host_key_fingerprint: str | None = None
    trust_first_use: bool = False
    revoked_host_keys: tuple[str, ...] = ()
    record: KnownHostsAppender | None = field(default=None, compare=False, repr=False)

    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def parse_jumps(
    jump: str, *, keys: str = "", host_keys: str = "", default_user: str = "", trust_first_use: bool = False
) -> tuple[JumpHop, ...]:
    """The hops `jump` names, with their keys and pins from the lists in the same order.

    Args:
        jump: ``user@host:port[,user@host:port...]``; empty means no jump host.
        keys: private key paths, comma-separated: one per hop, or one for all, or empty.
        host_keys: host key pins (SHA256:... or MD5), comma-separated: one per hop, or one for all, or empty.
        default_user: the user of a hop written without ``user@``.
        trust_first_use: accept an unpinned jump host key (as for the VM).
    Raises:
        ValueError: a hop is malformed, or a list's length is neither 1 nor the number of hops.
    """
    texts = [text.strip() for text in jump.split(",") if text.strip()]
    hops = []
    for text in texts:
        found = _HOP.fullmatch(text)
        if found is None:
            raise ValueError(f"jump host {text!r} is not user@host:port (an IPv6 address in brackets)")
        user = found.group("user") or default_user
        if not user:
            raise ValueError(f"jump host {text!r} names no user: write user@{text}")
        port = int(found.group("port") or 22)
        if not 1 <= port <= 65535:
            raise ValueError(f"jump host {text!r}: {port} is not a TCP port (1-65535)")
        hops.append(JumpHop(found.group("v6") or found.group("host") or "", port, user,
                            trust_first_use=trust_first_use))
    key_list = _per_hop("jump_keys", keys, len(hops))
    pin_list = _per_hop("jump_host_keys", host_keys, len(hops))
    return tuple(
        replace(hop, private_key_path=key, host_key_fingerprint=pin)
        for hop, key, pin in zip(hops, key_list, pin_list, strict=True)
    )


def _per_hop(name: str, text: str, count: int) -> list[str | None]:
    values = [value.strip() for value in text.split(",")] if text.strip() else []
    if not values:
        return [None] * count
    if count == 0:
        raise ValueError(f"{name} is given but jump names no jump host")
    if len(values) == 1:
        return [values[0]] * count
    if len(values) != count:
        raise ValueError(f"{name} has {len(values)} values for {count} jump hosts: give one per hop, in order")
    return [value or None for value in values]


def check_jump_inputs(jump: str, keys: str = "", host_keys: str = "") -> str | None:
    """Pre-flight: the jump inputs parse, the pins are pins and the key files exist; None when fine."""
    from recovery.engine.checks import host_key_pins

    try:
        hops = parse_jumps(jump, keys=keys, host_keys=host_keys, default_user="user")
    except ValueError as exc:
        return str(exc)
    for hop in hops:
        if hop.host_key_fingerprint and (problem := host_key_pins(hop.host_key_fingerprint)):
            return f"jump host {hop.where}: host key {problem}"
        if hop.private_key_path and not Path(hop.private_key_path).expanduser().is_file():
            return f"jump host {hop.where}: key file {hop.private_key_path} does not exist"
    return None


def check_jump(value: str | None) -> str | None:
    """Pre-flight of a `jump` parameter alone: the hops parse."""
    return check_jump_inputs(value or "")


def check_jump_pins(value: str | None) -> str | None:
    """Pre-flight of a `jump_host_keys` parameter alone: every pin is a pin."""
    from recovery.engine.checks import host_key_pins

    for pin in (value or "").split(","):
        if pin.strip() and (problem := host_key_pins(pin.strip())):
            return problem
    return None


def check_jump_lists(values: Mapping[str, object]) -> list[str]:
    """Pre-flight across a step's `jump`, `jump_keys`, `jump_host_keys`: the lists agree, the key files exist."""
    from recovery.engine.templating import Unknown

    texts = [values.get(name) for name in ("jump", "jump_keys", "jump_host_keys")]
    if any(isinstance(text, Unknown) for text in texts):
        return []
    jump, keys, pins = (text if isinstance(text, str) else "" for text in texts)
    if check_jump_inputs(jump):
        return []  # the jump parameter's own check names it
    problem = check_jump_inputs(jump, keys, pins)
    return [problem] if problem else []


def with_host_keys(
    hops: tuple[JumpHop, ...], known: KnownHosts | None, *, accept_new: bool,
    record: KnownHostsAppender | None = None,
) -> tuple[JumpHop, ...]:
    """The hops, their host keys decided as the VMs' of the same run are.

    `@revoked` keys in `known` first (never accepted, pinned or not); then a hop's own pin, else
    the keys `known` vouches for, else, with `accept_new`, whatever else it offers, appended to
    `record` once its login succeeds (as a VM's key is: ssh's ``accept-new``); a hop that none
    of them vouches for is refused.
    """
    checked = []
    for hop in hops:
        listed = known.lookup(hop.host, hop.port) if known is not None else []
        hop = replace(hop, revoked_host_keys=tuple(key.fingerprint for key in listed if key.revoked))
        if not hop.host_key_fingerprint:
            pins = ",".join(key.fingerprint for key in listed if not key.revoked)
            first_use = accept_new and not pins
            hop = replace(hop, host_key_fingerprint=pins or None, trust_first_use=first_use,
                          record=record if first_use else None)
        checked.append(hop)
    return tuple(checked)


def hops_from_flags(jump: str | None, keys: str | None, host_keys: str | None) -> tuple[JumpHop, ...]:
    """The ``--jump``, ``--jump-keys`` and ``--jump-host-keys`` of a fleet command; every hop names its user.

    Raises:
        UsageError: a value is malformed, a key file is missing, or the lists disagree.
    """
    from recovery.errors import UsageError

    jump, keys, host_keys = jump or "", keys or "", host_keys or ""
    if not jump and (keys or host_keys):
        raise UsageError("--jump-keys and --jump-host-keys need --jump")
    problem = check_jump_inputs(jump, keys, host_keys)
    if problem is None:
        try:
            return parse_jumps(jump, keys=keys, host_keys=host_keys)
        except ValueError as exc:
            problem = str(exc)
    raise UsageError(f"--jump: {problem}")


# How many VM connections one bastion login carries at once. One paramiko transport encrypts every
# VM's packets in one Python thread, so a few logins share a big fleet's load across threads; a
# small pool also bounds what one dropped login takes down. 64 x 8 = 512 at once, past any
# `--concurrency` anyone runs against one bastion.
CHANNELS_PER_LOGIN = 64
MAX_LOGINS = 8
# Channels one login opens over its life before it is retired (closed when its last channel ends)
# and a fresh one made. A login never lives long enough to re-key (paramiko re-keys after 2^29
# bytes; a VM check moves some kilobytes): the channel's lock is held while a data packet is
# queued (`_send_ordered`), and a re-key needing that lock would stall for paramiko's 30 s.
LIFETIME_CHANNELS = 2000
# A login refused for one of these is not tried again in the run: every later check gets its
# failure. A wrong bastion host key is refused once, not once per VM behind it.
_FINAL = (HostKeyMismatch, HostKeyUnknown, AuthRejected)
_CHUNK = 32768
# The window a jump channel grants the bastion: paramiko sends its WINDOW_ADJUST from the reading
# thread (`_copy_back`), outside every lock, so one could follow the channel's CLOSE (sshd then
# drops the login, as for data). It adjusts after a tenth of the window is read: 214 MB here,
# which no VM check comes near, so a jump channel never adjusts its window.
_WINDOW = 2**31 - 1


class _Login:
    """One logged-in bastion transport and the channels it carries now."""

    def __init__(self, stack: ExitStack, transport: Transport) -> None:
        self.stack = stack
        self.transport = transport
        self.open = 0
        self.opened = 0
        self.retired = False

    def usable(self) -> bool:
        return not self.retired and self.transport.is_active()


@dataclass
class _Chain:
    """The logins to one chain of hops with one key, and the login being made for it, if any."""

    logins: list[_Login] = field(default_factory=list)
    connecting: object | None = None  # a token for the login under way
    failed: tuple[object, VerifyError] | None = None  # the last attempt that failed, and why


class JumpPool:
    """Bastion logins shared by every VM reached through them, as OpenSSH's ``ControlMaster`` shares one.

    A VM check asks `connect` for a socket to its VM; the pool logs in to the bastion once, and
    opens a ``direct-tcpip`` channel per VM on that login, up to `channels_per_login` at once,
    then a second login, up to `max_logins` (then a check waits for a free channel). So an audit
    of 200 VMs behind one bastion makes one to four logins to it, not 200. One login is made at a
    time per chain, and the checks waiting for it share its failure; a refused host key or key
    is final for the pool's life: a wrong bastion host key costs one refused login, not one per
    VM. A login that drops is forgotten, and the next check logs in again.

    Each socket handed out is one end of a socketpair; a thread (`_pump`) copies between the
    other end and the channel, and is the only writer and closer of that channel. Why not give
    the channel itself to the SSH library (as the pool removed in commit d1e068d did): libssh2
    needs a file descriptor, and with paramiko several threads write to the channel (the VM
    session's transport thread, and the worker closing it), while `Channel.send` queues its
    data packet after releasing the channel's lock. A data packet then follows the channel's
    CLOSE now and then, sshd drops the whole login ("Disconnecting user ...: data packet
    referred to nonexistent channel 44", in the bastion's log) and every VM on it fails:
    66 to 82 of 200 hosts in one `benchmarks/revoke_fleet.py --bastion` round that way, none
    with the pump. (Not sshd's MaxStartups: one login; nor MaxSessions: forwardings do not
    count.) `_send_ordered` also closes the last gap: paramiko's transport thread answering
    the bastion's CLOSE while the pump's packet is on its way. The pump reads the channel with
    a thread of its own rather than select() on `Channel.fileno` (see `_pump`), and the channel's
    window is big enough never to be adjusted (`_WINDOW`).
    """

    def __init__(self, *, channels_per_login: int = CHANNELS_PER_LOGIN, max_logins: int = MAX_LOGINS) -> None:
        self.channels_per_login = channels_per_login
        self.max_logins = max_logins
        self.logins = 0  # logins made, over the pool's life (what a test counts)
        self._cond = threading.Condition()
        self._chains: dict[tuple[object, ...], _Chain] = {}
        self._closed = False

    def __enter__(self) -> JumpPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Log out of every bastion; channels still open end with their login."""
        with self._cond:
            self._closed = True
            logins = [login for chain in self._chains.values() for login in chain.logins]
            self._chains.clear()
            self._cond.notify_all()
        for login in logins:
            login.stack.close()

    @contextmanager
    def connect(
        self, hops: tuple[JumpHop, ...], destination: tuple[str, int], key: KeyPair | None, *,
        passphrase: Secret | None = None, timeout: float = 10.0,
    ) -> Iterator[socket.socket]:
        """A socket to `destination` through `hops`, for an SSH library; its channel is closed on exit.

        `key` logs in to the hops that name no key of their own (None: every hop names one).
        Errors raised inside the block are the caller's (the VM's) and come out unchanged.

        Raises:
            VerifyError family, named after the hop: a hop refused the login, its host key or the
                channel to `destination`, or no channel was free within `timeout`.
        """
        deadline = time.monotonic() + timeout
        last = hops[-1]
        chain = (hops, None if all(hop.private_key_path for hop in hops) else key and key.private_path)
        login, channel = self._channel(chain, hops, destination, key, passphrase, deadline)
        mine, theirs = socket.socketpair()
        pump = threading.Thread(target=_pump, args=(theirs, channel, timeout), daemon=True,
                                name=f"jump-{last.host}:{last.port}->{destination[0]}:{destination[1]}")
        try:
            pump.start()
        except BaseException:
            theirs.close()
            channel.close()
            mine.close()
            self._release(login)
            raise
        try:
            yield mine
        finally:
            mine.close()
            pump.join(timeout)
            self._release(login)

    def _channel(
        self, chain: tuple[object, ...], hops: tuple[JumpHop, ...], destination: tuple[str, int],
        key: KeyPair | None, passphrase: Secret | None, deadline: float,
    ) -> tuple[_Login, Channel]:
        """A login with a free channel slot, and the channel opened on it; a dropped login is logged in again once."""
        import paramiko

        last = hops[-1]
        for attempt in range(2):
            login = self._acquire(chain, hops, key, passphrase, deadline)
            left = deadline - time.monotonic()
            try:
                # paramiko's open_channel is thread-safe (the channel id is taken under the transport's
                # lock), so the checks open their channels on a shared login at once.
                channel = login.transport.open_channel("direct-tcpip", destination, ("127.0.0.1", 0),
                                                       window_size=_WINDOW, timeout=max(left, 0.1))
            except paramiko.ChannelException as exc:
                self._release(login)
                raise ConnectionRefused(
                    f"{PREFIX}{last.where}: {last.host}:{last.port} could not open a connection to "
                    f"{destination[0]}:{destination[1]} ({exc.text}): the VM is down, not listening, or the "
                    "bastion may not forward there (AllowTcpForwarding, PermitOpen)"
                ) from exc
            except (paramiko.SSHException, EOFError, OSError) as exc:
                self._release(login)
                if attempt == 0 and not login.transport.is_active() and time.monotonic() < deadline:
                    continue  # the login dropped: log in again
                if time.monotonic() >= deadline:
                    raise ConnectTimeout(f"{PREFIX}{last.where}: no channel to {destination[0]}:"
                                         f"{destination[1]} opened in time") from exc
                raise VerifyError(f"{PREFIX}{last.where}: the connection to the jump host failed: {exc}") from exc
            return login, channel
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _acquire(
        self, chain: tuple[object, ...], hops: tuple[JumpHop, ...], key: KeyPair | None,
        passphrase: Secret | None, deadline: float,
    ) -> _Login:
        """A slot on a login to `chain`: on one that has room, else on a new one made now (one at a time)."""
        last = hops[-1]
        with self._cond:
            state = self._chains.setdefault(chain, _Chain())
            waited_for: object | None = None
            while True:
                if self._closed:
                    raise VerifyError(f"{PREFIX}{last.where}: the run is over (its jump host logins are closed)")
                if state.failed is not None and (
                    state.failed[0] is waited_for or isinstance(state.failed[1], _FINAL)
                ):  # the login this check waited for failed, or one failed for good
                    error = state.failed[1]
                    raise type(error)(str(error))
                self._forget_dropped(state)
                for login in state.logins:
                    if login.usable() and login.open < self.channels_per_login:
                        login.open += 1
                        login.opened += 1
                        login.retired = login.opened >= LIFETIME_CHANNELS
                        return login
                if state.connecting is None and len(state.logins) < self.max_logins:
                    token = state.connecting = object()
                    break
                waited_for = state.connecting
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ConnectTimeout(f"{PREFIX}{last.where}: no free channel on its "
                                         f"{len(state.logins)} login(s) in time")
                self._cond.wait(left)
        try:
            login = self._login(hops, key, passphrase, max(deadline - time.monotonic(), 0.1))
        except VerifyError as exc:
            with self._cond:
                state.connecting, state.failed = None, (token, exc)
                self._cond.notify_all()
            raise
        except BaseException:
            with self._cond:
                state.connecting = None
                self._cond.notify_all()
            raise
        with self._cond:
            state.connecting = None
            login.open = login.opened = 1
            state.logins.append(login)
            self.logins += 1
            self._cond.notify_all()
            closed = self._closed
        if closed:
            login.stack.close()
            raise VerifyError(f"{PREFIX}{last.where}: the run is over (its jump host logins are closed)")
        return login

    def _forget_dropped(self, state: _Chain) -> None:
        """(Lock held.) Logins whose transport died take no more channels; their stacks close with the last one."""
        for login in list(state.logins):
            if not login.transport.is_active() and login.open == 0:
                state.logins.remove(login)
                threading.Thread(target=login.stack.close, daemon=True).start()

    def _release(self, login: _Login) -> None:
        with self._cond:
            login.open -= 1
            done = login.open == 0 and not login.usable()
            if done:
                for state in self._chains.values():
                    if login in state.logins:
                        state.logins.remove(login)
            self._cond.notify_all()
        if done:
            login.stack.close()

    @staticmethod
    def _login(hops: tuple[JumpHop, ...], key: KeyPair | None, passphrase: Secret | None, timeout: float) -> _Login:
        """A login to the last of `hops` (through the ones before it), with its own key or `key`."""
        from recovery.ssh.keys import load_keypair
        from recovery.ssh.verifier import SSHTarget, connect

        last = hops[-1]
        target = SSHTarget(last.host, last.port, last.user, host_key_fingerprint=last.host_key_fingerprint,
                           trust_first_use=last.trust_first_use, jumps=hops[:-1],
                           revoked_host_keys=last.revoked_host_keys)
        stack = ExitStack()
        try:
            with _named_after(last):
                if last.private_key_path:
                    hop_key, hop_passphrase = load_keypair(Path(last.private_key_path).expanduser(), None), None
                elif key is not None:
                    hop_key, hop_passphrase = key, passphrase
                else:
                    raise VerifyError("no key to log in with: give the jump host a key of its own")
                connection = stack.enter_context(connect(target, hop_key, passphrase=hop_passphrase,
                                                         timeout=timeout))
                transport = connection.client.get_transport()
                if transport is None:
                    raise VerifyError(f"the SSH connection to {last.host}:{last.port} closed")
                if connection.check.trusted_on_first_use and last.record is not None:
                    last.record.add(last.host, last.port, connection.check.offered_line)
        except BaseException:
            stack.close()
            raise
        return _Login(stack, transport)


@contextmanager
def _named_after(hop: JumpHop) -> Iterator[None]:
    """A hop's own failure, named after the hop (an earlier hop's is named already)."""
    try:
        yield
    except VerifyError as exc:
        if str(exc).startswith(PREFIX):
            raise
        raise type(exc)(f"{PREFIX}{hop.where}: {exc}") from exc
    except KeyGenerationError as exc:  # the hop's key file cannot be read
        raise VerifyError(f"{PREFIX}{hop.where}: {exc}") from exc


def _pump(sock: socket.socket, channel: Channel, timeout: float) -> None:
    """Copy the caller's bytes to the channel until the caller is done, then close both; `_copy_back` does the rest.

    The only thread that writes to or closes `channel`, so no data can follow its CLOSE. Two
    threads and blocking reads, not select(): `Channel.fileno` makes a pipe that paramiko's
    transport thread writes a byte to when data arrives, unlocked against `Channel.close`
    closing it. With a fleet's channels opening and closing, the pipe's descriptor number was
    reused by then, and the byte went to another descriptor: the bastion login's own socket
    failed with EBADF ("Socket exception: Bad file descriptor") and took every VM on it along.
    """
    channel.settimeout(timeout)  # how long a send waits for the bastion's window to open
    back = threading.Thread(target=_copy_back, args=(channel, sock), daemon=True,
                            name=threading.current_thread().name + "<")
    back.start()
    try:
        while True:
            data = sock.recv(_CHUNK)
            if not data or not _send_ordered(channel, data):
                return
    except OSError:  # the caller's end failed, or the bastion's window stayed shut: this connection is over
        return
    finally:
        channel.close()
        back.join()
        sock.close()


def _copy_back(channel: Channel, sock: socket.socket) -> None:
    """Copy the channel's bytes to the caller until the channel ends, then end the caller's reading (EOF)."""
    try:
        while True:
            try:
                data = channel.recv(_CHUNK)
            except TimeoutError:  # nothing for a while: wait on, until the channel closes
                continue
            if not data:
                break
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    except OSError:  # the caller closed its end: nobody reads any more
        return


def _send_ordered(channel: Channel, data: bytes) -> bool:
    """`Channel.send`, with the data packet queued while the channel's lock is held; False once it is closed.

    paramiko's own `send` releases the lock first, and its transport thread may answer the
    bastion's CLOSE in between: the data would then follow the CLOSE and sshd drop the login.
    Under the lock, the CLOSE answer waits for the packet, and a send after it sees `closed`.
    """
    from paramiko.common import cMSG_CHANNEL_DATA
    from paramiko.message import Message

    transport = channel.get_transport()
    view = memoryview(data)
    while view:
        message = Message()
        message.add_byte(cMSG_CHANNEL_DATA)
        message.add_int(channel.remote_chanid)
        with channel.lock:
            if channel.closed:
                return False
            # paramiko's own `_send`, but for where the packet is queued: its private parts, on purpose.
            size = channel._wait_for_send_window(len(view))  # type: ignore[attr-defined]
            if size == 0:
                return False
            message.add_string(bytes(view[:size]))
            transport._send_user_message(message)  # type: ignore[attr-defined]
        view = view[size:]
    return True


# The pool the fleet commands share (`shared_logins`); `tunnel` uses it when there is one.
_shared: JumpPool | None = None
_shared_users = 0
_shared_lock = threading.Lock()


@contextmanager
def shared_logins() -> Iterator[JumpPool]:
    """Share bastion logins between every `tunnel` of the process until the `with` block ends.

    The audit and revoke runs enter it around their checks; `tunnel`'s callers (the verifier
    and the remote runner, deep below the fleet code) then share logins without a pool passed
    down to them. Entered again while in force (two runs in one program), it shares the pool,
    which closes when the last leaves.
    """
    global _shared, _shared_users
    with _shared_lock:
        if _shared is None:
            _shared = JumpPool()
        pool = _shared
        _shared_users += 1
    try:
        yield pool
    finally:
        with _shared_lock:
            _shared_users -= 1
            last = _shared_users == 0
            if last:
                _shared = None
        if last:
            pool.close()


@contextmanager
def tunnel(
    hops: tuple[JumpHop, ...], destination: tuple[str, int], key: KeyPair | None, *,
    passphrase: Secret | None = None, timeout: float = 10.0,
) -> Iterator[socket.socket]:
    """A socket to `destination` through `hops` (the last hop opens the channel), for paramiko's ``sock=``.

    Within `shared_logins` the shared pool's logins are used; otherwise the hops are logged in
    for this socket alone, until the `with` block ends. Errors raised inside the block are the
    caller's (the VM's) and come out unchanged; a hop's own failure is named after the hop.

    Raises:
        VerifyError family: a hop refused the login, its host key, or the channel to the next hop.
    """
    pool = _shared
    if pool is not None:
        with pool.connect(hops, destination, key, passphrase=passphrase, timeout=timeout) as sock:
            yield sock
        return
    with JumpPool(max_logins=1) as own, own.connect(hops, destination, key, passphrase=passphrase,
                                                     timeout=timeout) as sock:
        yield sock
