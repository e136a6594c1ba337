"""OpenStack Swift: the key is an object in a private container, fetched through a TempURL.

Why our own signing: openstacksdk's ``generate_temp_url`` signs with HMAC-SHA1 only
(Swift deprecates it) and returns a path, not a URL. The signature here is Swift's
documented form, ``HMAC(key, "GET\\n<expires>\\n<path>")`` over the decoded path from
``/v1/`` on: hex for sha256 and sha1, ``sha512:<urlsafe base64>`` for sha512.

Digest: ``auto`` takes the best of sha512 and sha256 that the cluster's ``GET /info``
lists under ``tempurl.allowed_digests``. sha1 is used only when it is the only one
allowed (a cluster whose ``tempurl`` entry has no ``allowed_digests`` is such an old
one), and a warning says so. A cluster whose /info cannot be read is assumed to
accept sha256 (every Swift since 2.17, 2018), also with a warning.

Temp-URL key, for the chosen scope (the account, or the container when
``key_scope="container"``, which limits what a signature can open to that container):

1. If ``X-<Scope>-Meta-Temp-URL-Key`` holds a key, sign with it; else if
   ``X-<Scope>-Meta-Temp-URL-Key-2`` does, sign with that. Nothing is written.
2. If both are empty, write a new random key (256 bits) into the first slot, read the
   slots back, and sign with what the first slot then holds (our key, or the key of
   another client that wrote at the same moment; a slot never gets a second write
   from us).
3. If the read-back shows no key at all, these credentials do not own the scope:
   Swift hides Temp-URL keys from non-owners and drops their attempts to set one, so
   an existing key can be neither read nor overwritten. That is a `PublishError`
   asking an owner to set a key.

So an existing key is never overwritten: we write only into an empty first slot and
never touch the second, which owners use to rotate keys. Swift has no conditional
metadata update, so two clients that both find the slots empty may both write the
first slot within milliseconds of each other; the later write wins and the earlier
client's URLs stop working. A key we created stays in place after we finish, so the
next run reuses it; it signs nothing once our objects are gone.

Each object also carries ``X-Delete-After``, the ttl plus half a minute: if the cleanup
never runs (a crash, a lost machine), Swift deletes the object shortly after its URL
expires anyway. The margin keeps the two apart, so an expired URL is refused by the
TempURL check (401) rather than racing the object's own expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import parse_qs, quote, quote_plus, unquote, urlencode, urlsplit

from recovery.errors import ConfigError, PublishError, PublishUnavailable
from recovery.publishers import ClosingPublisher, Published
from recovery.safety.redact import Secret, masked_url, register, scrub

if TYPE_CHECKING:
    from openstack.connection import Connection

__all__ = ["Digest", "SwiftPublisher", "choose_digest", "temp_url_signature"]

# Seconds an object outlives its TempURL before Swift deletes it by itself (a backstop).
_DELETE_MARGIN = 30

logger = logging.getLogger(__name__)

Digest = Literal["sha1", "sha256", "sha512"]
_PREFERRED: tuple[Digest, ...] = ("sha512", "sha256")
_DIGESTS: tuple[Digest, ...] = ("sha512", "sha256", "sha1")
_VERSION_PATH = re.compile(r"/v\d+(\.\d+)?(/.*)?$")  # /v1/AUTH_x in a storage URL (swiftclient's rule)
_BODY_EXCERPT = 200


def choose_digest(info: Mapping[str, Any] | None, wanted: str = "auto") -> Digest:
    """The TempURL digest to sign with, given the cluster's ``GET /info`` document.

    Args:
        info: the parsed /info document, or None when the cluster does not publish it.
        wanted: ``auto`` for the best the cluster allows, or one of sha512, sha256, sha1.
    Returns:
        the digest name.
    Raises:
        ConfigError: `wanted` is not a digest name.
        PublishError: the cluster has no TempURL middleware, or does not allow `wanted`.
    """
    if info is None:
        allowed: set[str] | None = None
    elif "tempurl" not in info:
        raise PublishError("this Swift does not offer TempURLs: its GET /info has no 'tempurl' entry")
    else:
        # Clusters older than Swift 2.17 list no allowed_digests and accept sha1 only.
        allowed = set(info["tempurl"].get("allowed_digests", ["sha1"]))
    if wanted != "auto":
        named = _named_digest(wanted)
        if allowed is not None and named not in allowed:
            raise PublishError(
                f"this Swift does not accept {named} TempURL signatures; it allows {', '.join(sorted(allowed))}"
            )
        return named
    if allowed is None:
        logger.warning("the cluster's GET /info is not readable; signing TempURLs with sha256")
        return "sha256"
    for digest in _PREFERRED:
        if digest in allowed:
            return digest
    if "sha1" in allowed:
        logger.warning("this Swift allows only sha1 TempURL signatures, which Swift deprecates; signing with sha1")
        return "sha1"
    raise PublishError(f"this Swift allows no TempURL digest we know: {', '.join(sorted(allowed))}")


def _named_digest(name: str) -> Digest:
    for digest in _DIGESTS:
        if digest == name:
            return digest
    raise ConfigError(f"swift digest {name!r} is invalid: use auto, {', '.join(_DIGESTS)}")


def temp_url_signature(key: bytes, path: str, expires: int, digest: Digest) -> str:
    """Swift's TempURL signature for a GET of `path` (decoded, from ``/v1/`` on) until `expires`."""
    mac = hmac.new(key, f"GET\n{expires}\n{path}".encode(), getattr(hashlib, digest))
    if digest == "sha512":  # Swift's docs require the prefixed base64 form for sha512
        return "sha512:" + base64.urlsafe_b64encode(mac.digest()).decode("ascii")
    return mac.hexdigest()


class _BadStatus(Exception):
    """An HTTP answer we did not expect; turned into our errors by `_storage_errors`."""

    def __init__(self, response: Any) -> None:
        super().__init__(response.status_code)
        self.response = response


class SwiftPublisher(ClosingPublisher):
    """Publishes into a Swift container and hands out TempURLs; one instance per run.

    Nothing is sent before the first `publish`: the cluster's capabilities, the
    container and the Temp-URL key are looked up then, once, and reused.

    Args:
        connection: an openstacksdk ``Connection``; the caller keeps owning it. A run passes
            its own (`StepContext.require_cloud`), so Swift reuses the token Nova got.
        cloud: instead of `connection`, a cloud to connect to as `recovery.cloud.connect`
            does ("" follows its rule: OS_CLOUD, or a sourced openrc); closed by `close`.
        container: container for published keys; created without ACLs when missing, and
            refused when its read ACL makes it public (``.r:``).
        digest: ``auto`` (the best of sha512/sha256 the cluster allows), or sha512,
            sha256, sha1.
        key_scope: ``account`` or ``container``: where the Temp-URL key is looked for and,
            if there is none, created (see the module docstring for the exact rule).
        host_rewrite: ``scheme://host[:port]`` to put in the URL instead of the storage
            endpoint's, for VMs that reach object storage by another name. The signature
            covers only the path, so it stays valid.
        timeout: seconds to wait for each answer from object storage.
    Raises:
        ConfigError: an option is invalid, neither or both of `connection` and `cloud`
            are given, or `cloud` is not in clouds.yaml.
    """

    scheme: ClassVar[str] = "swift"

    def __init__(
        self,
        *,
        connection: Connection | None = None,
        cloud: str | None = None,
        container: str = "recovery-keys",
        digest: str = "auto",
        key_scope: str = "account",
        host_rewrite: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        if (connection is None) == (cloud is None):
            raise ConfigError("the swift publisher needs exactly one of connection= or cloud=")
        if not container or "/" in container:
            raise ConfigError(f"swift container name {container!r} is invalid: it must be non-empty, without '/'")
        if digest != "auto":
            _named_digest(digest)
        if key_scope not in ("account", "container"):
            raise ConfigError(f"swift key_scope {key_scope!r} is invalid: use account or container")
        self._rewrite = _check_host_rewrite(host_rewrite) if host_rewrite else None
        self._container = container
        self._wanted_digest = digest
        self._key_scope = key_scope
        self._timeout = timeout
        self._owns_connection = connection is None
        self._conn = connection if connection is not None else _connect(cloud or "")
        self._closed = False
        # Looked up by the first publish, then reused.
        self._storage_url: str | None = None
        self._digest: Digest | None = None
        self._key: bytes | None = None

    @property
    def digest(self) -> Digest | None:
        """The digest the URLs are signed with; None until the first `publish`."""
        return self._digest

    def publish(self, name: str, data: bytes, ttl: timedelta) -> Published:
        """Upload `data` under a random object name and return its TempURL.

        Args:
            name: what the object is, for reports; it does not appear in the URL.
            data: the bytes to publish.
            ttl: how long the URL works; Swift deletes the object itself 30 s later.
        Returns:
            the TempURL (a Secret labelled with its masked form), sha256 and expiry.
        Raises:
            ValueError: `ttl` is not positive.
            PublishError: object storage refused (credentials, permissions, no
                Temp-URL key and no right to set one, a public container).
            PublishUnavailable: object storage answered 5xx or could not be reached.
        """
        if ttl <= timedelta(0):
            raise ValueError(f"ttl must be positive, got {ttl}")
        if self._closed:
            raise PublishError("the swift publisher is closed; cannot publish")
        seconds = math.ceil(ttl.total_seconds())
        obj = secrets.token_urlsafe(24)
        storage_url, digest, key = self._prepare()
        # expires is rounded up to a whole second, so the URL works for at least the ttl;
        # the object outlives it by the margin.
        expires = math.ceil(time.time()) + seconds
        with self._storage_errors(f"uploading object {obj!r} into container {self._container!r}"):
            self._expect(
                self._request(
                    "PUT",
                    self._object_url(storage_url, obj),
                    headers={"Content-Type": "text/plain", "X-Delete-After": str(seconds + _DELETE_MARGIN)},
                    data=data,
                ),
                201,
            )
        path = unquote(urlsplit(storage_url).path) + f"/{self._container}/{obj}"
        signature = temp_url_signature(key, path, expires, digest)
        _register_signature(signature)
        base = self._rewrite or _origin(storage_url)
        query = urlencode({"temp_url_sig": signature, "temp_url_expires": expires})
        url = f"{base}{urlsplit(self._object_url(storage_url, obj)).path}?{query}"
        logger.debug("published %s (%d bytes) as %s", name, len(data), masked_url(url))
        return Published(
            scheme=self.scheme,
            url=Secret(url, label=masked_url(url)),
            sha256=hashlib.sha256(data).hexdigest(),
            expires_at=datetime.fromtimestamp(expires, UTC),
            name=name,
        )

    def withdraw(self, item: Published) -> None:
        """Delete the object, then prove its TempURL no longer serves it (404 or 401).

        A no-op for a URL that is not under this publisher's account, and for an object
        that is already gone.

        Raises:
            PublishError: the delete was refused, or the URL still serves the object.
            PublishUnavailable: object storage answered 5xx or could not be reached.
        """
        storage_url = self._storage_url or self._endpoint()
        parts = urlsplit(item.url.reveal())
        path = unquote(parts.path)
        account_path = unquote(urlsplit(storage_url).path) + "/"
        if not path.startswith(account_path):
            return
        container, _, obj = path[len(account_path) :].partition("/")
        if not obj:
            return
        for signature in parse_qs(parts.query).get("temp_url_sig", []):
            _register_signature(signature)  # a resumed run did not sign it in this process
        with self._storage_errors(f"deleting object {obj!r} from container {container!r}"):
            object_url = f"{storage_url}/{quote(container)}/{quote(obj)}"
            self._expect(self._request("DELETE", object_url), 204, 404)
        # Check through the endpoint we reach, not a rewritten host only the VM may reach.
        with self._storage_errors(f"checking that object {obj!r} in container {container!r} is gone"):
            check = self._request("GET", f"{object_url}?{parts.query}", authenticated=False)
            if check.status_code in (200, 206):
                raise PublishError(f"{item.url} still serves the key after it was deleted")
            self._expect(check, 401, 404)

    def close(self) -> None:
        """Close the connection if this publisher opened it (``cloud=``). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._owns_connection:
            self._conn.close()

    # --- the first publish looks things up once -------------------------------------

    def _prepare(self) -> tuple[str, Digest, bytes]:
        if self._storage_url is None or self._digest is None or self._key is None:
            storage_url = self._endpoint()
            digest = self._choose_digest(storage_url)
            container_headers = self._ensure_container(storage_url)
            self._key = self._temp_url_key(storage_url, container_headers)
            self._storage_url, self._digest = storage_url, digest
        return self._storage_url, self._digest, self._key

    def _endpoint(self) -> str:
        with self._storage_errors("looking up the object-store endpoint"):
            endpoint: str | None = self._conn.object_store.get_endpoint()
        if not endpoint:
            raise PublishError("the cloud's service catalog has no object-store endpoint")
        return endpoint.rstrip("/")

    def _choose_digest(self, storage_url: str) -> Digest:
        parts = urlsplit(storage_url)
        info_path = _VERSION_PATH.sub("/info", parts.path) if _VERSION_PATH.search(parts.path) else "/info"
        with self._storage_errors("reading the cluster's capabilities (GET /info)"):
            response = self._request("GET", _origin(storage_url) + info_path, authenticated=False)
        try:
            info = response.json() if response.status_code == 200 else None
        except ValueError:  # a front proxy may answer /info with its own HTML page
            info = None
        digest = choose_digest(info, self._wanted_digest)
        logger.debug("signing TempURLs with %s", digest)
        return digest

    def _ensure_container(self, storage_url: str) -> Mapping[str, str]:
        """Create the container if missing; refuse a public one. Returns its HEAD headers."""
        url = f"{storage_url}/{quote(self._container)}"
        with self._storage_errors(f"checking container {self._container!r}"):
            response = self._request("HEAD", url)
            if response.status_code == 404:
                self._expect(self._request("PUT", url), 201, 202)
                logger.info("created the private container %s", self._container)
                response = self._request("HEAD", url)
            self._expect(response, 200, 204)
        read_acl = response.headers.get("X-Container-Read", "")
        if ".r:" in read_acl:
            raise PublishError(
                f"container {self._container!r} is publicly readable (X-Container-Read: {read_acl}); "
                "choose a private container for published keys"
            )
        headers: Mapping[str, str] = response.headers
        return headers

    def _temp_url_key(self, storage_url: str, container_headers: Mapping[str, str]) -> bytes:
        """Find or create the Temp-URL key; the rule is in the module docstring."""
        scope = self._key_scope
        prefix = "X-Account-Meta-" if scope == "account" else "X-Container-Meta-"
        url = storage_url if scope == "account" else f"{storage_url}/{quote(self._container)}"
        slots = (prefix + "Temp-URL-Key", prefix + "Temp-URL-Key-2")
        where = "the account" if scope == "account" else f"container {self._container!r}"
        with self._storage_errors(f"reading the Temp-URL key of {where}"):
            headers = container_headers if scope == "container" else self._expect(self._request("HEAD", url), 200, 204)
        found = _first_key(headers, slots)
        if found is not None:
            return found
        new_key = secrets.token_urlsafe(32)
        register(new_key)
        with self._storage_errors(f"setting a Temp-URL key on {where} (only its owner may)"):
            self._expect(self._request("POST", url, headers={slots[0]: new_key}), 202, 204)
            found = _first_key(self._expect(self._request("HEAD", url), 200, 204), slots)
        if found is None:
            raise PublishError(
                f"{where} has no Temp-URL key these credentials can see, and they cannot set one: Swift "
                "shows and accepts Temp-URL keys only from the account's owner (tempauth .admin, or a "
                f"Keystone operator role). Ask an owner to set {slots[0]}, or publish another way"
            )
        if found == new_key.encode():
            logger.info("set a new Temp-URL key on %s (%s)", where, slots[0])
        return found

    # --- HTTP and the one place errors are translated --------------------------------

    def _object_url(self, storage_url: str, obj: str) -> str:
        return f"{storage_url}/{quote(self._container)}/{quote(obj)}"

    def _request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        authenticated: bool = True,
    ) -> Any:
        return self._conn.object_store.request(
            url,
            method,
            headers=dict(headers or {}),
            data=data,
            authenticated=authenticated,
            raise_exc=False,
            timeout=self._timeout,
        )

    @staticmethod
    def _expect(response: Any, *statuses: int) -> Mapping[str, str]:
        if response.status_code not in statuses:
            raise _BadStatus(response)
        headers: Mapping[str, str] = response.headers
        return headers

    @contextmanager
    def _storage_errors(self, what: str) -> Iterator[None]:
        """Turn keystoneauth and HTTP failures while doing `what` into our errors."""
        from keystoneauth1 import exceptions as ksa
        from openstack import exceptions as sdk

        try:
            yield
        except _BadStatus as exc:
            raise _status_error(what, exc.response) from None
        except ksa.SSLError as exc:
            raise PublishError(f"TLS failed while {what}: {scrub(str(exc))}") from exc
        except ksa.ConnectionError as exc:  # refused, reset, timed out
            raise PublishUnavailable(
                f"cannot reach object storage while {what}: {type(exc).__name__}: {scrub(str(exc))}"
            ) from exc
        except ksa.HttpError as exc:  # raised by authentication (Keystone), not by our requests
            raise _error_for(what, exc.http_status, exc.message, exc.request_id, "") from exc
        except ksa.EndpointNotFound as exc:
            raise PublishError(f"the cloud has no object-store endpoint ({what}): {exc}") from exc
        except (ksa.ClientException, sdk.SDKException) as exc:
            raise PublishError(f"failed while {what}: {type(exc).__name__}: {scrub(str(exc))}") from exc


def _status_error(what: str, response: Any) -> PublishError:
    request_id = response.headers.get("X-Openstack-Request-Id") or response.headers.get("X-Trans-Id")
    body = " ".join(response.text.split())[:_BODY_EXCERPT] if response.text else ""
    return _error_for(what, response.status_code, response.reason or "", request_id, body)


def _error_for(what: str, status: int, reason: str, request_id: str | None, body: str) -> PublishError:
    """One message shape: what we did, the HTTP status, the request ID, Swift's own words."""
    detail = f"HTTP {status} {reason}".rstrip() + (f", request {request_id}" if request_id else "")
    said = f": {scrub(body)}" if body else ""
    if status == 401:
        return PublishError(
            f"object storage rejected the credentials while {what} ({detail}): check the cloud's credentials "
            "in clouds.yaml, or whether its token expired"
        )
    if status == 403:
        return PublishError(f"object storage denied permission while {what} ({detail}){said}")
    if status >= 500:
        return PublishUnavailable(f"object storage failed while {what} ({detail}){said}")
    return PublishError(f"object storage refused {what} ({detail}){said}")


def _register_signature(signature: str) -> None:
    """Scrub the signature wherever it shows up: keystoneauth's debug log and its errors print
    request URLs, where a sha512 signature appears percent-encoded."""
    register(signature)
    register(quote_plus(signature))


def _first_key(headers: Mapping[str, str], slots: tuple[str, str]) -> bytes | None:
    for slot in slots:
        value = headers.get(slot)
        if value:
            register(value)  # keystoneauth's debug log prints response headers
            return value.encode()
    return None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _check_host_rewrite(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"swift host_rewrite {value!r} is invalid: give scheme://host[:port], nothing else")
    return f"{parts.scheme}://{parts.netloc}"


def _connect(cloud: str) -> Connection:
    """Open clouds.yaml entry `cloud` as a run does (timeouts, app name), imported only when named."""
    from recovery.cloud import connect

    return connect(cloud).connection
