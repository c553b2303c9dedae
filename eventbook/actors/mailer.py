"""Sending mail: a simulated mail server by default, real SMTP when EVENTBOOK_SMTP_URL is set."""

from __future__ import annotations

import asyncio
import random
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib

from eventbook.config import Config
from eventbook.outages import DependencyUnavailable


class MailError(Exception):
    """The mail server refused this mail (a permanent 5xx, or the simulated failure):
    the message that asked for it counts a failed attempt."""


class MailUnavailable(DependencyUnavailable):
    """The mail server cannot be reached, or refused for now (4xx): not the mail's fault.
    The actor waits for the server and tries again, without counting an attempt."""


class Mailer(Protocol):
    async def send(self, to: str, subject: str, body: str) -> None:
        """Hand one plain-text mail to the mail server; MailError when it refuses the
        mail, MailUnavailable when it is unreachable or refuses for now."""

    async def probe(self) -> None:
        """Raise unless the mail server answers."""


class SimulatedMailer:
    """A stand-in mail server with a configurable latency and failure rate."""

    def __init__(self, latency_ms: int = 0, failure_rate: float = 0.0,
                 rng: random.Random | None = None) -> None:
        self.latency = latency_ms / 1000
        self.failure_rate = failure_rate
        self.rng = rng or random.Random()
        self.sent = 0

    async def send(self, to: str, subject: str, body: str) -> None:
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.failure_rate and self.rng.random() < self.failure_rate:
            raise MailError("simulated mail server refused the mail")
        self.sent += 1

    async def probe(self) -> None:
        """The simulated server is always there."""


class SmtpMailer:
    """Real SMTP through aiosmtplib: smtp://[user:pass@]host[:port] (STARTTLS when the server
    offers it) or smtps://... (TLS from the start)."""

    def __init__(self, url: str, sender: str, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("an SMTP URL looks like smtp[s]://user:pass@host:port")
        self.use_tls = parts.scheme == "smtps"
        self.hostname = parts.hostname
        self.port = parts.port or (465 if self.use_tls else 25)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.sender = sender
        self.timeout = timeout

    async def send(self, to: str, subject: str, body: str) -> None:
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = to
        mail["Subject"] = subject
        mail.set_content(body)
        try:
            await aiosmtplib.send(
                mail, hostname=self.hostname, port=self.port, username=self.username,
                password=self.password, use_tls=self.use_tls, timeout=self.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [refused.code for refused in exc.recipients]
            error: type[Exception] = MailUnavailable if all(
                400 <= code < 500 for code in codes) else MailError
            raise error(f"SMTP {self.hostname}:{self.port}: {exc}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            error = MailUnavailable if 400 <= exc.code < 500 else MailError
            raise error(f"SMTP {self.hostname}:{self.port}: {exc}") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            # Refused or dropped connections, timeouts: the server is not there now.
            raise MailUnavailable(f"SMTP {self.hostname}:{self.port}: {exc!r}") from exc

    async def probe(self) -> None:
        """Connect and say NOOP; MailUnavailable unless the server answers."""
        smtp = aiosmtplib.SMTP(hostname=self.hostname, port=self.port, use_tls=self.use_tls,
                               timeout=min(self.timeout, 2.0))
        try:
            await smtp.connect()
            await smtp.noop()
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise MailUnavailable(f"SMTP {self.hostname}:{self.port}: {exc!r}") from exc
        finally:
            if smtp.is_connected:
                smtp.close()


def build_mailer(config: Config) -> Mailer:
    if config.smtp_url:
        return SmtpMailer(config.smtp_url, config.mail_from)
    return SimulatedMailer(config.mail_latency_ms, config.mail_failure_rate)
