"""The webhook SSRF guard: refused address classes, public ones allowed, the allowlist by host
and by CIDR, names resolving (wholly or partly) to refused addresses."""

from __future__ import annotations

import pickle
import socket
from collections.abc import Sequence

import pytest

from noa.jobs.webhook_targets import (
    WebhookTargetError,
    WebhookTargetUnresolvedError,
    check_target,
)

REFUSED = [
    "127.0.0.1",
    "127.8.9.10",
    "0.0.0.0",
    "0.1.2.3",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "100.127.255.254",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.2.1",
    "198.18.0.1",
    "::1",
    "::",
    "fe80::1",
    "fe80::1%eth0",
    "fc00::1",
    "fd12:3456::1",
    "fec0::1",
    "ff02::1",
    "2001:db8::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:0.0.0.0",
    "::127.0.0.1",
    "64:ff9b::127.0.0.1",
    "2002:7f00:1::",
    "2002:a00:1::",
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8"]


def resolver(table: dict[str, Sequence[str]]):  # type: ignore[no-untyped-def]
    calls: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> Sequence[str]:
        calls.append((host, port))
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


def literal(address: str) -> str:
    return f"[{address}]" if ":" in address else address


@pytest.mark.parametrize("address", [a for a in REFUSED if "%" not in a])  # no zone ids in URLs
async def test_refused_addresses_as_literals(address: str) -> None:
    with pytest.raises(WebhookTargetError) as info:
        await check_target(f"http://{literal(address)}:8080/hook", resolve=resolver({}))
    assert info.value.status_code == 400
    assert info.value.error_type == "invalid_request_error"
    assert info.value.code == "webhook_target_refused"


@pytest.mark.parametrize("address", REFUSED)
async def test_refused_addresses_behind_a_name(address: str) -> None:
    resolve = resolver({"hooks.example.com": [address]})
    with pytest.raises(WebhookTargetError, match="not allowlisted"):
        await check_target("https://hooks.example.com/x", resolve=resolve)


@pytest.mark.parametrize("address", PUBLIC)
async def test_public_addresses_are_allowed(address: str) -> None:
    resolve = resolver({"hooks.example.com": [address]})
    target = await check_target("https://Hooks.Example.com./in?a=1&b=%20x", resolve=resolve)
    assert target.addresses == (address,)
    assert target.host == "hooks.example.com" and target.port == 443 and target.tls
    assert target.target == "/in?a=1&b=%20x" and target.host_header == "hooks.example.com"
    assert resolve.calls == [("hooks.example.com", 443)]  # type: ignore[attr-defined]
    literal_target = await check_target(f"http://{literal(address)}:81", resolve=resolver({}))
    assert literal_target.target == "/" and literal_target.host_header.endswith(":81")


async def test_a_name_resolving_to_loopback_is_refused() -> None:
    resolve = resolver({"innocent.example.com": ["127.0.0.1"]})
    with pytest.raises(WebhookTargetError, match=r"127\.0\.0\.1 \(loopback\)"):
        await check_target("http://innocent.example.com/", resolve=resolve)


async def test_one_private_address_among_public_ones_refuses_the_target() -> None:
    resolve = resolver({"mixed.example.com": ["8.8.8.8", "2606:4700::1111", "10.1.2.3"]})
    with pytest.raises(WebhookTargetError, match=r"10\.1\.2\.3"):
        await check_target("https://mixed.example.com/", resolve=resolve)
    resolve = resolver({"mixed.example.com": ["::ffff:192.168.0.1", "8.8.8.8"]})
    with pytest.raises(WebhookTargetError):
        await check_target("https://mixed.example.com/", resolve=resolve)


async def test_the_allowlist_by_host() -> None:
    resolve = resolver(
        {"receiver.internal": ["10.0.0.5", "fd00::5"], "other.internal": ["10.0.0.6"]}
    )
    target = await check_target(
        "http://RECEIVER.internal:9000/h", allow=["receiver.internal"], resolve=resolve
    )
    assert target.addresses == ("10.0.0.5", "fd00::5")
    assert target.host_header == "receiver.internal:9000"
    with pytest.raises(WebhookTargetError):
        await check_target("http://other.internal/", allow=["receiver.internal"], resolve=resolve)
    literal_ok = await check_target("http://127.0.0.1:8000/", allow=["127.0.0.1"])
    assert literal_ok.addresses == ("127.0.0.1",)


async def test_the_allowlist_by_cidr() -> None:
    resolve = resolver({"a.internal": ["10.1.2.3"], "b.internal": ["10.1.2.3", "10.9.0.1"]})
    allow = ["10.1.0.0/16", "fd00::/8", "127.0.0.0/8"]
    assert (await check_target("http://a.internal/", allow=allow, resolve=resolve)).addresses
    with pytest.raises(WebhookTargetError, match=r"10\.9\.0\.1"):  # one address outside
        await check_target("http://b.internal/", allow=allow, resolve=resolve)
    await check_target("http://[fd00::1]/", allow=allow)
    await check_target("http://[::ffff:127.0.0.1]/", allow=allow)  # mapped into an allowed net
    with pytest.raises(WebhookTargetError):
        await check_target("http://[::1]/", allow=allow)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://8.8.8.8/",
        "file:///etc/passwd",
        "gopher://8.8.8.8/",
        "//8.8.8.8/",
        "8.8.8.8",
        "http:///path",
        "http://user:pw@8.8.8.8/",
        "http://8.8.8.8:99999/",
        "http://8.8.8.8/a b",
        "http://8.8.8.8/\r\nX-Injected: 1",
    ],
)
async def test_malformed_or_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(WebhookTargetError):
        await check_target(url, resolve=resolver({}))


async def test_an_unresolvable_host_is_its_own_refusal() -> None:
    with pytest.raises(WebhookTargetUnresolvedError) as info:
        await check_target("https://nowhere.example.com/", resolve=resolver({}))
    assert info.value.code == "webhook_target_unresolved"
    with pytest.raises(WebhookTargetUnresolvedError):
        await check_target(
            "https://empty.example.com/", resolve=resolver({"empty.example.com": []})
        )


async def test_the_system_resolver_refuses_localhost() -> None:
    with pytest.raises(WebhookTargetError, match="loopback"):
        await check_target("http://localhost:8000/")


def test_the_errors_pickle_to_themselves() -> None:
    for cls in (WebhookTargetError, WebhookTargetUnresolvedError):
        error = cls("refused", param="callback_url")
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is cls and copy.code == error.code and copy.param == "callback_url"
