"""Where a webhook may go: the SSRF guard in front of every delivery and every redirect.

``check_target`` parses the URL (http or https, a host, no credentials), resolves the host once
and refuses it if ANY address it resolves to is not a public unicast address: private (RFC 1918,
``fc00::/7``), loopback, link-local (``169.254.0.0/16``, ``fe80::/10``), unspecified, multicast,
reserved, shared (``100.64.0.0/10``), documentation and benchmarking ranges, and the IPv6 forms
that embed an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4
``2002::/16``) when the embedded address is refused. The sender then connects only to the
addresses returned here, so a name that resolves differently a moment later (DNS rebinding)
cannot move the connection to an address that was never checked.

The operator's allowlist (``allow``) names hosts (matched exactly, case-insensitively: every
address of an allowlisted host is accepted) or networks in CIDR form (an address inside one is
accepted). Ports are not restricted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from noa.errors import InvalidRequestError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""``(host, port) -> addresses``: the IP addresses (text) a host name resolves to."""

SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT; not is_private in 3.11
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
SIXTOFOUR = ipaddress.IPv6Network("2002::/16")
# characters kept as they are when a path and query are percent-encoded for the request line
_URL_SAFE = "!#$%&'()*+,/:;=?@[]~"


class WebhookTargetError(InvalidRequestError):
    """A webhook URL NOA will not deliver to: a scheme other than http(s), credentials in the
    URL, or a host that resolves to a refused address and is not allowlisted."""

    default_code = "webhook_target_refused"


class WebhookTargetUnresolvedError(WebhookTargetError):
    """The target's host did not resolve (now): a delivery may try again later."""

    default_code = "webhook_target_unresolved"


@dataclass(frozen=True)
class WebhookTarget:
    """A checked URL: connect to one of ``addresses`` on ``port``, and name ``host`` in the
    ``Host`` header (``host_header``) and in TLS (SNI and certificate checks)."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]
    target: str  # the request line's path and query, percent-encoded

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == (443 if self.tls else 80) else f"{name}:{self.port}"


async def system_resolver(host: str, port: int) -> list[str]:
    """The event loop's ``getaddrinfo`` (TCP), each address once, in the order returned."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    found: list[str] = []
    for family, *_, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and str(sockaddr[0]) not in found:
            found.append(str(sockaddr[0]))
    return found


def refusal(address: IPAddress) -> str | None:
    """Why ``address`` is no place for a webhook (``"loopback"``, ...), or None if public."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            reason = refusal(embedded)
            return f"{reason} (embedded in IPv6)" if reason else None
    v6 = isinstance(address, ipaddress.IPv6Address)
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("shared", not v6 and address in SHARED),
        ("site-local", isinstance(address, ipaddress.IPv6Address) and address.is_site_local),
        ("reserved", address.is_reserved),
        ("non-global", not address.is_global),
    )
    return next((reason for reason, hit in checks if hit), None)


def _parse_allow(allow: Sequence[str]) -> tuple[set[str], list[IPNetwork]]:
    hosts: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in allow:
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            hosts.add(_normal_host(entry))
    return hosts, networks


def _normal_host(host: str) -> str:
    return host.strip().rstrip(".").lower()


def _split(url: str) -> tuple[str, str, int, str]:
    """scheme, host (ASCII, lower case), port, request target; or WebhookTargetError."""
    if any(c.isspace() or not c.isprintable() for c in url):
        raise WebhookTargetError("a webhook URL may not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise WebhookTargetError(f"not a valid webhook URL: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise WebhookTargetError("a webhook URL is http or https")
    if parts.username is not None or parts.password is not None:
        raise WebhookTargetError("a webhook URL may not carry credentials")
    host = _normal_host(parts.hostname or "")
    if not host:
        raise WebhookTargetError("a webhook URL names a host")
    if not _is_literal(host):
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise WebhookTargetError("the webhook URL's host is not a valid name") from None
    path = parts.path or "/"
    target = quote(f"{path}?{parts.query}" if parts.query else path, safe=_URL_SAFE)
    return scheme, host, port or (443 if scheme == "https" else 80), target


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _allowed(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return any(address in net or (mapped is not None and mapped in net) for net in networks)


async def check_target(
    url: str, *, allow: Sequence[str] = (), resolve: Resolver = system_resolver
) -> WebhookTarget:
    """The checked target of ``url``, with the addresses to connect to; ``WebhookTargetError``
    if any of them is refused and not allowlisted (``WebhookTargetUnresolvedError`` if the host
    does not resolve)."""
    scheme, host, port, target = _split(url)
    hosts, networks = _parse_allow(allow)
    literal = ipaddress.ip_address(host) if _is_literal(host) else None
    if literal is not None:
        addresses: list[str] = [str(literal)]
    else:
        try:
            addresses = [str(a) for a in await resolve(host, port)]
        except OSError as e:  # socket.gaierror among them
            raise WebhookTargetUnresolvedError(
                f"the webhook host {host!r} did not resolve: {e.strerror or e}"
            ) from None
        if not addresses:
            raise WebhookTargetUnresolvedError(f"the webhook host {host!r} did not resolve")
    if host not in hosts:
        for text in addresses:
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                raise WebhookTargetError(
                    f"the webhook host {host!r} resolved to a non-IP address"
                ) from None
            reason = refusal(address)
            if reason and not _allowed(address, networks):
                raise WebhookTargetError(
                    f"the webhook host {host!r} resolves to {address} ({reason}), "
                    "which is not allowlisted"
                )
    return WebhookTarget(url, scheme, host, port, tuple(addresses), target)
