"""Where webhooks may be sent, checked when an endpoint is registered and again at
every delivery (a name can resolve elsewhere later: DNS rebinding).

A URL is https (http too with EVENTBOOK_WEBHOOK_ALLOW_HTTP), names a host, carries no
user name or password and no fragment. Its host must resolve only to public addresses:
loopback, private, link-local (cloud metadata services live at 169.254.169.254),
shared, reserved, multicast and unspecified ones are refused, IPv4 written inside IPv6
included, unless EVENTBOOK_WEBHOOK_ALLOW_PRIVATE is on. At delivery the check is made by
the resolver of the connection itself (`GuardedResolver`), so the address connected to
is the address checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import SplitResult, urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_SECONDS = 3.0


class UrlRefused(OSError):
    """A webhook URL that may not be used; `str()` says why, for the endpoint's owner.
    An OSError, so aiohttp reports it as the connection's failure."""


def check_syntax(url: str, *, allow_http: bool) -> SplitResult:
    """The URL's parts, when its form is one webhooks may use."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise UrlRefused("The URL contains spaces or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"The URL is not valid: {exc}.") from None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise UrlRefused(
            "Use an https:// URL." if not allow_http else "Use an https:// or http:// URL."
        )
    if not parts.hostname:
        raise UrlRefused("The URL names no host.")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("Put no user name or password in the URL; verify the signature.")
    if parts.fragment:
        raise UrlRefused("The URL has a #fragment, which is never sent.")
    if port == 0:
        raise UrlRefused("The URL's port is 0.")
    return parts


# IPv6 prefixes whose last 32 bits are an IPv4 address that packets reach: IPv4-compatible
# (deprecated), IPv4-translated (SIIT) and NAT64's well-known prefix, through which a
# cloud's NAT64 gateway reaches its private IPv4 network. (`ipaddress` calls them global.)
IPV4_EMBEDDING = tuple(
    ipaddress.IPv6Network(prefix) for prefix in ("::/96", "::ffff:0:0:0/96", "64:ff9b::/96")
)
# NAT64's local-use prefix (RFC 8215) may embed the IPv4 address anywhere: refused.
NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")


def address_allowed(address: str) -> bool:
    """Whether `address` is a public unicast address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is None and any(ip in prefix for prefix in IPV4_EMBEDDING):
            mapped = ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
        if mapped is not None:
            return address_allowed(str(mapped))
        if ip.teredo is not None or ip in NAT64_LOCAL_USE:
            return False
    return ip.is_global and not ip.is_multicast


def literal_address(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def refuse_addresses(host: str, addresses: list[str]) -> None:
    refused = sorted({address for address in addresses if not address_allowed(address)})
    if refused:
        raise UrlRefused(
            f"{host} resolves to an address webhooks may not reach ({', '.join(refused)})."
        )


async def check_url(url: str, *, allow_http: bool, allow_private: bool) -> None:
    """Refuse a URL webhooks may not use (UrlRefused): its form, then every address its
    host resolves to, unless private addresses are allowed."""
    parts = check_syntax(url, allow_http=allow_http)
    if allow_private:
        return
    host = parts.hostname
    assert host is not None
    literal = literal_address(host)
    if literal is not None:
        refuse_addresses(host, [literal])
        return
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            infos = await loop.getaddrinfo(
                host, parts.port or 443, type=socket.SOCK_STREAM
            )
    except (OSError, TimeoutError, UnicodeError):
        raise UrlRefused(f"{host} does not resolve.") from None
    refuse_addresses(host, [str(info[4][0]) for info in infos])


class GuardedResolver(AbstractResolver):
    """The resolver of delivery connections: refuses a host with any address webhooks
    may not reach, so what is connected to is what was checked. (aiohttp does not ask
    the resolver about IP literals; `check_url` covers those before each attempt.)"""

    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self.resolver.resolve(host, port, family)
        if not self.allow_private:
            refuse_addresses(host, [str(entry["host"]) for entry in found])
        return found

    async def close(self) -> None:
        await self.resolver.close()


def describe(exc: BaseException) -> str:
    """A short, secret-free account of why an attempt failed, for the deliveries list."""
    cause: Any = exc
    while cause.__cause__ is not None and not isinstance(cause, UrlRefused):
        cause = cause.__cause__
    text = str(cause) or type(cause).__name__
    return f"{type(cause).__name__}: {text}"[:500]


def check_delivery_url(url: str, *, allow_http: bool, allow_private: bool) -> None:
    """The checks an attempt makes before connecting: the URL's form (the settings may
    have changed since it was registered) and, for an IP literal, which aiohttp does not
    resolve, its address. Names are checked by GuardedResolver as they are resolved."""
    parts = check_syntax(url, allow_http=allow_http)
    literal = literal_address(parts.hostname or "")
    if literal is not None and not allow_private:
        refuse_addresses(literal, [literal])
