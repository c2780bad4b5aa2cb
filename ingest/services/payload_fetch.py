"""The worker's one outbound fetch of a URL it was sent: the body behind an `s3_payload` ping.

The URL comes from a webhook, so it is fetched only from the origins in AMY_S3_PAYLOAD_HOSTS
(`scheme://host[:port]`, a leading `*.` standing for one or more labels; by default Terra's S3,
`https://*.amazonaws.com`). The host is resolved once; if any of its addresses is private,
loopback, link-local or otherwise not public, the fetch is refused unless that address is itself
listed, and the connection goes to the checked address (with the URL's host as Host header and
TLS server name), so a second lookup cannot point it elsewhere. Redirects are refused, and no
proxy from the environment is used. A refusal is BadData: the ping is dead-lettered with a
message saying why.

Bounded by `TERRA_API_TIMEOUT_SECONDS` per network operation and for the whole download, and by
`AMY_WEBHOOK_MAX_BYTES` for the body. 4xx is bad data (an expired link answers 403); 5xx, 408,
429, timeouts and connection errors are transient. The URL is never logged or put in an error:
its query string is a credential until it expires.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import httpx
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from ingest.errors import BadData, TransientError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DEFAULT_PORTS = {"http": 80, "https": 443}
_TRANSIENT_STATUSES = frozenset({408, 429})


@dataclass(frozen=True)
class Origin:
    """One entry of AMY_S3_PAYLOAD_HOSTS."""

    scheme: str
    host: str  # lower case, without the wildcard; an IP address in its compressed form
    port: int
    wildcard: bool = False

    def admits(self, scheme: str, host: str, port: int) -> bool:
        if (scheme, port) != (self.scheme, self.port):
            return False
        return host.endswith("." + self.host) if self.wildcard else host == self.host


def origin_parse(value: str) -> Origin:
    """`scheme://host[:port]` or `scheme://*.domain[:port]`; ImproperlyConfigured otherwise."""
    text = value.strip()
    wildcard = "://*." in text
    try:
        url = httpx.URL(text.replace("://*.", "://", 1))
    except httpx.InvalidURL as exc:
        raise ImproperlyConfigured(f"AMY_S3_PAYLOAD_HOSTS: {value!r} is not scheme://host[:port]") from exc
    if url.scheme not in _DEFAULT_PORTS or not url.host or url.raw_path not in (b"", b"/") or url.userinfo:
        raise ImproperlyConfigured(f"AMY_S3_PAYLOAD_HOSTS: {value!r} is not http(s)://host[:port]")
    address = _ip_or_none(url.host)
    if wildcard and (address is not None or "." not in url.host):
        raise ImproperlyConfigured(f"AMY_S3_PAYLOAD_HOSTS: {value!r}: `*.` needs a domain of two labels or more")
    host = url.host if address is None else address.compressed
    return Origin(url.scheme, host, url.port or _DEFAULT_PORTS[url.scheme], wildcard)


@lru_cache(maxsize=8)
def _origins(values: tuple[str, ...]) -> tuple[Origin, ...]:
    return tuple(origin_parse(value) for value in values if value.strip())


def allowed_origins() -> tuple[Origin, ...]:
    return _origins(tuple(settings.AMY_S3_PAYLOAD_HOSTS))


def _ip_or_none(host: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    # ::ffff:10.0.0.1 reaches 10.0.0.1: judge the IPv4 address it carries.
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def is_public(address: IPAddress) -> bool:
    """False for private, loopback, link-local, shared, reserved, multicast and unspecified."""
    return address.is_global and not address.is_multicast


def _listed(address: IPAddress, scheme: str, port: int, origins: Iterable[Origin]) -> bool:
    return any(not o.wildcard and o.admits(scheme, address.compressed, port) for o in origins)


def _address_for(host: str, scheme: str, port: int, origins: tuple[Origin, ...]) -> IPAddress:
    """The one address to connect to: every address the host resolves to must be public or listed."""
    literal = _ip_or_none(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        except (socket.gaierror, UnicodeError) as exc:
            raise TransientError(f"s3_payload fetch from {host} failed: name not resolved") from exc
        addresses = []
        for info in infos:
            address = _ip_or_none(str(info[4][0]))
            if address is not None and address not in addresses:
                addresses.append(address)
        if not addresses:
            raise TransientError(f"s3_payload fetch from {host} failed: name not resolved")
    for address in addresses:
        if not is_public(address) and not _listed(address, scheme, port, origins):
            raise BadData(
                f"s3_payload host {host} resolves to {address.compressed}, a private, loopback or "
                "link-local address that AMY_S3_PAYLOAD_HOSTS does not list"
            )
    return addresses[0]


def payload_fetch(url: str) -> bytes:
    """GET a pre-signed URL from an allowed origin: the body, at most AMY_WEBHOOK_MAX_BYTES, within the timeout."""
    try:
        target = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise BadData("url is missing or not an http(s) URL") from exc
    scheme, host = target.scheme, target.host
    if scheme not in _DEFAULT_PORTS or not host:
        raise BadData("url is missing or not an http(s) URL")
    port = target.port or _DEFAULT_PORTS[scheme]
    origins = allowed_origins()
    literal = _ip_or_none(host)
    if not any(origin.admits(scheme, literal.compressed if literal else host, port) for origin in origins):
        raise BadData(f"s3_payload url's origin {scheme}://{_netloc(host, port)} is not in AMY_S3_PAYLOAD_HOSTS")
    address = _address_for(host, scheme, port, origins)
    return _download(target, host, port, address)


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _download(target: httpx.URL, host: str, port: int, address: IPAddress) -> bytes:
    timeout = settings.TERRA_API_TIMEOUT_SECONDS
    cap = settings.AMY_WEBHOOK_MAX_BYTES
    deadline = time.monotonic() + timeout
    host_header = host if target.port is None else _netloc(host, port)
    extensions = {"sni_hostname": host} if target.scheme == "https" and _ip_or_none(host) is None else {}
    pinned = target.copy_with(host=address.compressed, port=target.port)
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client,
            client.stream("GET", pinned, headers={"Host": host_header}, extensions=extensions) as response,
        ):
            _check_peer(response, host, address)
            status = response.status_code
            if status >= 500 or status in _TRANSIENT_STATUSES:
                raise TransientError(f"s3_payload fetch from {host} answered {status}")
            if 300 <= status < 400:
                raise BadData(f"s3_payload fetch from {host} answered a redirect ({status}), which is not followed")
            if not 200 <= status < 300:
                raise BadData(f"s3_payload fetch from {host} answered {status}")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > cap:
                raise BadData(f"s3_payload body of {declared} bytes is over {cap} bytes")
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > cap:
                    raise BadData(f"s3_payload body is over {cap} bytes")
                if time.monotonic() > deadline:
                    raise TransientError(f"s3_payload fetch from {host} took over {timeout} s")
                chunks.append(chunk)
    except httpx.TimeoutException as exc:
        raise TransientError(f"s3_payload fetch from {host} timed out") from exc
    except (httpx.DecodingError, httpx.InvalidURL) as exc:
        raise BadData(f"s3_payload fetch from {host} failed: {type(exc).__name__}") from exc
    except httpx.HTTPError as exc:
        raise TransientError(f"s3_payload fetch from {host} failed: {type(exc).__name__}") from exc
    return b"".join(chunks)


def _check_peer(response: httpx.Response, host: str, address: IPAddress) -> None:
    """The socket's peer is the address that was checked (nothing between resolved it again)."""
    stream = response.extensions.get("network_stream")
    try:
        peer = stream.get_extra_info("server_addr") if stream is not None else None
    except OSError:  # the server already closed the socket: the address it was opened to stands
        peer = None
    if peer and _ip_or_none(str(peer[0])) != address:
        raise BadData(f"s3_payload fetch from {host} connected to {peer[0]}, not the address checked")
