"""E-mail addresses as eventbook compares them: one key decides both that an address is
taken and which account a log-in is for."""

from __future__ import annotations

import unicodedata
import uuid

import asyncpg
import idna
import structlog

log = structlog.get_logger(__name__)


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


async def fill_keys(conn: asyncpg.Connection) -> None:
    """Give every user that has no key yet its key: the data step of the migration that
    added the column. Where several users now share a key, the one that could log in
    before keeps it (then the oldest); the others keep no key, so they cannot log in until
    an operator changes their address, and `eventbook check` lists them."""
    rows = await conn.fetch(
        "SELECT id, email, lower(email) AS old_lookup FROM users"
        " WHERE email_key IS NULL ORDER BY created_at, id"
    )
    # Log-in compared the database's lower(email) with Python's lower() of what was typed,
    # so only an address whose database lower case Python's lower() keeps could log in.
    ranked = sorted(rows, key=lambda row: row["old_lookup"].lower() != row["old_lookup"])
    owners: dict[str, uuid.UUID] = {}
    for row in ranked:
        address_key = key(row["email"])
        owner = owners.setdefault(address_key, row["id"])
        if owner != row["id"]:
            log.warning("email_key_taken", user_id=str(row["id"]), key_owner=str(owner))
    await conn.execute(
        "UPDATE users SET email_key = new.key"
        " FROM unnest($1::uuid[], $2::text[]) AS new (id, key) WHERE users.id = new.id",
        list(owners.values()), list(owners),
    )
