"""Which URLs webhooks may use (eventbook.webhook_urls): their form, and the addresses
their hosts may reach, checked without the app."""

from __future__ import annotations

import pytest

from eventbook.webhook_urls import (
    GuardedResolver,
    UrlRefused,
    address_allowed,
    check_delivery_url,
    check_syntax,
    check_url,
)

PUBLIC_ADDRESSES = [
    "1.1.1.1",
    "8.8.8.8",
    "2606:4700:4700::1111",
    "::ffff:1.1.1.1",  # IPv4-mapped: the IPv4 address inside decides
    "2002:101:101::1",  # 6to4 of 1.1.1.1
    "64:ff9b::101:101",  # NAT64 (the well-known prefix) of 1.1.1.1
]

NON_PUBLIC_ADDRESSES = [
    "127.0.0.1", "127.255.255.254",  # loopback
    "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1",  # private
    "169.254.169.254",  # link-local: cloud metadata services
    "0.0.0.0", "0.1.2.3",  # this network
    "100.64.0.1",  # shared (carrier-grade NAT)
    "192.0.2.1", "198.51.100.1", "203.0.113.1",  # documentation
    "198.18.0.1",  # benchmarking
    "240.0.0.1", "255.255.255.255",  # reserved, broadcast
    "224.0.0.1", "239.255.255.250",  # multicast
    "::1", "::",  # loopback, unspecified
    "fd00::1", "fc00::1",  # unique local
    "fe80::1", "fe80::1%eth0",  # link-local, with a zone
    "ff02::1", "ff0e::1",  # multicast, even global-scope multicast
    "2001:db8::1",  # documentation
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",  # IPv4-mapped
    "2002:7f00:1::1", "2002:a9fe:a9fe::1", "2002:a00:1::1",  # 6to4 of non-public IPv4
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # teredo: its IPv4 side is not checkable
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::a00:1",  # NAT64 of non-public IPv4
    "64:ff9b:1::a00:1",  # NAT64, local-use prefix
    "::127.0.0.1", "::10.0.0.1",  # IPv4-compatible (deprecated)
    "::ffff:0:7f00:1",  # IPv4-translated
    "not an address", "", "1.1.1", "1.1.1.1.1",
]


@pytest.mark.parametrize("address", PUBLIC_ADDRESSES)
def test_a_public_address_is_allowed(address: str) -> None:
    assert address_allowed(address)


@pytest.mark.parametrize("address", NON_PUBLIC_ADDRESSES)
def test_a_non_public_address_is_refused(address: str) -> None:
    assert not address_allowed(address)


@pytest.mark.parametrize("url", [
    "https://example.com/hooks",
    "https://example.com:8443/hooks?source=eventbook",
    "https://[2606:4700:4700::1111]/hooks",
    "https://1.1.1.1/hooks",
])
def test_an_https_url_naming_a_host_has_the_form_webhooks_use(url: str) -> None:
    assert check_syntax(url, allow_http=False).hostname


@pytest.mark.parametrize(("url", "why"), [
    ("http://example.com/hooks", "https://"),
    ("ftp://example.com/hooks", "https://"),
    ("file:///etc/passwd", "https://"),
    ("example.com/hooks", "https://"),
    ("https:///hooks", "no host"),
    ("https://user:pass@example.com/hooks", "user name or password"),
    ("https://user@example.com/hooks", "user name or password"),
    ("https://example.com/hooks#part", "fragment"),
    ("https://example.com:0/hooks", "port is 0"),
    ("https://example.com:99999/hooks", "not valid"),
    ("https://[::1/hooks", "not valid"),
    ("https://example.com/ho oks", "spaces or control"),
    ("https://example.com/hooks\n", "spaces or control"),
    ("https://example.com/" + "a" * 2048, "longer than 2048"),
])
def test_a_url_of_another_form_is_refused_saying_why(url: str, why: str) -> None:
    with pytest.raises(UrlRefused, match=why):
        check_syntax(url, allow_http=False)


def test_http_is_allowed_only_when_the_setting_allows_it() -> None:
    assert check_syntax("http://example.com/hooks", allow_http=True).scheme == "http"
    with pytest.raises(UrlRefused, match="https:// or http://"):
        check_syntax("ftp://example.com/hooks", allow_http=True)


@pytest.mark.parametrize("url", [
    "https://127.0.0.1/hooks",
    "https://localhost/hooks",
    "https://[::1]/hooks",
    "https://[::ffff:127.0.0.1]/hooks",
    "https://[64:ff9b::a9fe:a9fe]/latest/meta-data",
    "https://169.254.169.254/latest/meta-data",
    "https://2130706433/hooks",  # 127.0.0.1 as one number, which resolvers accept
    "https://0x7f.1/hooks",  # and in hex, shortened
    "https://127.1/hooks",
])
async def test_a_url_reaching_a_non_public_address_is_refused(url: str) -> None:
    with pytest.raises(UrlRefused, match="may not reach"):
        await check_url(url, allow_http=False, allow_private=False)
    await check_url(url, allow_http=False, allow_private=True)


async def test_a_host_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(UrlRefused, match="does not resolve"):
        await check_url("https://no-such-host.invalid/hooks", allow_http=False,
                        allow_private=False)


async def test_a_public_address_literal_is_accepted_without_resolving() -> None:
    await check_url("https://1.1.1.1/hooks", allow_http=False, allow_private=False)
    await check_url("https://[2606:4700:4700::1111]/hooks", allow_http=False,
                    allow_private=False)


async def test_allowing_private_addresses_does_not_allow_any_form() -> None:
    with pytest.raises(UrlRefused, match="https://"):
        await check_url("http://127.0.0.1/hooks", allow_http=False, allow_private=True)
    with pytest.raises(UrlRefused, match="user name"):
        await check_url("https://u:p@127.0.0.1/hooks", allow_http=False, allow_private=True)


def test_a_delivery_checks_the_form_and_an_address_literal_before_connecting() -> None:
    with pytest.raises(UrlRefused, match="may not reach"):
        check_delivery_url("http://127.0.0.1:8080/hooks", allow_http=True, allow_private=False)
    with pytest.raises(UrlRefused, match="may not reach"):
        check_delivery_url("http://[::ffff:a9fe:a9fe]/", allow_http=True, allow_private=False)
    with pytest.raises(UrlRefused, match="https://"):
        check_delivery_url("http://1.1.1.1/hooks", allow_http=False, allow_private=False)
    check_delivery_url("http://127.0.0.1:8080/hooks", allow_http=True, allow_private=True)
    check_delivery_url("https://1.1.1.1/hooks", allow_http=False, allow_private=False)
    # A name is left to the connection's resolver: it may resolve elsewhere by then.
    check_delivery_url("https://localhost/hooks", allow_http=False, allow_private=False)


async def test_the_delivery_resolver_refuses_a_name_resolving_to_a_non_public_address(
) -> None:
    guarded = GuardedResolver(allow_private=False)
    try:
        with pytest.raises(UrlRefused, match="localhost resolves to an address"):
            await guarded.resolve("localhost", 443)
    finally:
        await guarded.close()
    lenient = GuardedResolver(allow_private=True)
    try:
        found = await lenient.resolve("localhost", 443)
    finally:
        await lenient.close()
    assert "127.0.0.1" in {entry["host"] for entry in found}
