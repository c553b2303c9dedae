"""E-mail addresses as eventbook compares them: one key decides both that an address is
taken and which account a log-in is for."""

from __future__ import annotations

import unicodedata

import idna


def key(address: str) -> str:
    """The form in which two addresses are the same account: the local part in Unicode
    NFKC and case-folded (Ä and ä, ß and ss, a composed and a decomposed é are equal), the
    domain as its IDNA A-label (Bücher.example is xn--bcher-kva.example). Any text has a
    key: a domain that is not valid IDNA (an address stored before domains were checked,
    or one typed at log-in) is folded like the local part."""
    local, _, domain = address.strip().rpartition("@")
    try:
        domain_key = ascii_domain(domain)
    except UnicodeError:
        domain_key = _fold(domain)
    return f"{_fold(local)}@{domain_key}"


def ascii_domain(domain: str) -> str:
    """The domain's IDNA 2008 A-label form, after the UTS 46 mapping browsers use (which
    lowers the case); UnicodeError (idna.IDNAError is one) when it is not a valid domain
    name."""
    return idna.encode(domain, uts46=True).decode("ascii")


def _fold(text: str) -> str:
    # Case folding can leave text out of NFKC (some letters fold to a letter and a
    # combining mark), so normalise again after it.
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())

