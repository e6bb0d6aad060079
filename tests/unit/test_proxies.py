"""Which upstreams the environment's proxy variables send through a proxy (read as urllib does:
either case, the lower case one winning; NO_PROXY hosts, domains, ports and "*")."""

from __future__ import annotations

import pytest

from noa.providers.transport.proxies import environment_proxies, proxy_for, shown

PROXY = "http://proxy.internal:3128"


@pytest.mark.parametrize(
    ("url", "environ", "expected"),
    [
        ("https://api.openai.com/v1", {}, None),
        ("https://api.openai.com/v1", {"HTTPS_PROXY": PROXY}, PROXY),
        ("https://api.openai.com/v1", {"https_proxy": PROXY}, PROXY),
        ("https://api.openai.com/v1", {"HTTP_PROXY": PROXY}, None),  # another scheme's
        ("http://upstream:8000/v1", {"HTTP_PROXY": PROXY}, PROXY),
        ("https://api.openai.com/v1", {"ALL_PROXY": PROXY}, PROXY),
        ("https://api.openai.com/v1", {"all_proxy": "socks5://s:1080"}, "socks5://s:1080"),
        ("https://api.openai.com/v1", {"HTTPS_PROXY": "http://a:1", "https_proxy": PROXY}, PROXY),
        ("https://api.openai.com/v1", {"HTTPS_PROXY": PROXY, "https_proxy": ""}, None),
        ("https://api.openai.com/v1", {"HTTPS_PROXY": PROXY, "NO_PROXY": "*"}, None),
        ("https://api.openai.com/v1", {"HTTPS_PROXY": PROXY, "NO_PROXY": "openai.com"}, None),
        ("https://api.openai.com/v1", {"HTTPS_PROXY": PROXY, "no_proxy": ".openai.com"}, None),
        ("https://api.openai.com/v1", {"HTTPS_PROXY": PROXY, "NO_PROXY": "penai.com"}, PROXY),
        ("http://10.0.0.5:8000/v1", {"HTTP_PROXY": PROXY, "NO_PROXY": "x, 10.0.0.5"}, None),
        ("http://10.0.0.5:8000/v1", {"HTTP_PROXY": PROXY, "NO_PROXY": "10.0.0.5:8000"}, None),
        ("http://10.0.0.5:8000/v1", {"HTTP_PROXY": PROXY, "NO_PROXY": "10.0.0.5:9000"}, PROXY),
        ("http://LOCALHOST:8000/v1", {"HTTP_PROXY": PROXY, "NO_PROXY": "localhost"}, None),
    ],
)
def test_proxy_for(url: str, environ: dict[str, str], expected: str | None) -> None:
    assert proxy_for(url, environ) == expected


def test_lower_case_wins_and_an_empty_one_removes() -> None:
    environ = {"HTTP_PROXY": "http://upper:1", "http_proxy": "http://lower:2", "NO_PROXY": "a"}
    assert environment_proxies(environ) == {"http": "http://lower:2", "no": "a"}
    assert environment_proxies({"FTP_PROXY": "", "PATH": "/bin"}) == {}


def test_a_proxy_is_shown_without_its_credentials() -> None:
    assert shown("http://user:secret@proxy.internal:3128") == "http://proxy.internal:3128"
    assert shown("proxy.internal:3128") == "http://proxy.internal:3128"
