"""Passwords, tokens, the auth middleware and the object-level access rules."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hmac
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import argon2
import jwt
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from eventbook.config import Config
from eventbook.endpoints import SCRAPER, endpoint_of, single_header
from eventbook.errors import Problem
from eventbook.keys import CONFIG, PRINCIPAL, TOKENS

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["sub", "role", "iat", "exp", "iss", "aud", "jti"]
ROLES = ("organizer", "customer")
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Principal:
    """The signed-in user a request acts for, as its token says."""

    id: uuid.UUID
    role: str


class HashLane:
    """Password hashes of one kind, on threads of their own behind a bounded queue.

    Sign-ups and log-ins each get a lane, so a burst of one kind never waits in front of
    the other, and a lane that is full answers 503 at once rather than making every
    caller behind it wait longer.
    """

    def __init__(self, name: str, threads: int, queue: int) -> None:
        self.name = name
        self._executor = concurrent.futures.ThreadPoolExecutor(
            threads, thread_name_prefix=f"hash-{name}"
        )
        self._capacity = threads + queue
        self._admitted = 0
        # Taken on the event loop when a hash is admitted, released on its worker thread.
        self._lock = threading.Lock()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            if self._admitted >= self._capacity:
                raise Problem(
                    503, "server_busy",
                    "Too many passwords are being checked right now; retry shortly.",
                    headers={"Retry-After": "1"},
                )
            self._admitted += 1
        try:
            future = self._executor.submit(fn, *args)
        except BaseException:
            self._release()
            raise
        # Released when the hash is done (or cancelled before it started), not when its
        # caller stops waiting: an abandoned hash still holds its thread.
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def _release(self, _: object = None) -> None:
        with self._lock:
            self._admitted -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class Passwords:
    """Argon2id hashing, always off the event loop (it is CPU- and memory-heavy): sign-ups
    hash in one lane, log-ins verify (and upgrade old hashes) in another."""

    def __init__(self, config: Config) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=config.argon2_time_cost,
            memory_cost=config.argon2_memory_kib,
            parallelism=1,
            type=argon2.Type.ID,
        )
        self._dummy: str | None = None
        self.signup = HashLane("signup", config.hash_threads, config.hash_queue)
        self.login = HashLane("login", config.hash_threads, config.hash_queue)

    async def hash(self, password: str) -> str:
        """The hash of a new account's password."""
        return await self.signup.run(self._hasher.hash, password)

    async def rehash(self, password: str) -> str:
        """A new hash of a password that just logged in, to upgrade its stored one."""
        return await self.login.run(self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """Check a password. With no stored hash (unknown e-mail) still spend the same time."""
        if stored_hash is None:
            if self._dummy is None:
                self._dummy = await self.login.run(self._hasher.hash, "not a real password")
            await self.login.run(self._verify, self._dummy, password)
            return False
        return await self.login.run(self._verify, stored_hash, password)

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._hasher.check_needs_rehash(stored_hash)

    def _verify(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False

    def close(self) -> None:
        self.signup.close()
        self.login.close()


class Tokens:
    """HS256 access tokens; decoding accepts only that algorithm and requires every claim."""

    def __init__(self, secret: str, issuer: str, audience: str, ttl_seconds: int) -> None:
        self.secret = secret
        self.issuer = issuer
        self.audience = audience
        self.ttl_seconds = ttl_seconds

    def issue(self, user_id: uuid.UUID, role: str) -> str:
        now = int(time.time())
        claims = {
            "sub": str(user_id),
            "role": role,
            "iat": now,
            "exp": now + self.ttl_seconds,
            "iss": self.issuer,
            "aud": self.audience,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    def decode(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": REQUIRED_CLAIMS},
            )
            principal = Principal(uuid.UUID(str(claims["sub"])), str(claims["role"]))
        except jwt.ExpiredSignatureError:
            raise _unauthorized("invalid_token", "The access token has expired.") from None
        except (jwt.InvalidTokenError, ValueError, TypeError):
            raise _unauthorized("invalid_token", "The access token is not valid.") from None
        if principal.role not in ROLES:
            raise _unauthorized("invalid_token", "The access token is not valid.")
        return principal


def _unauthorized(code: str, detail: str) -> Problem:
    error = ' error="invalid_token"' if code == "invalid_token" else ""
    return Problem(401, code, detail, headers={"WWW-Authenticate": f"Bearer{error}"})


def account_gone() -> Problem:
    """A valid token of a user who was deleted since it was issued."""
    return _unauthorized("invalid_token", "The account no longer exists.")


def principal(request: web.Request) -> Principal:
    """The signed-in user; only call it from routes that declare roles."""
    return request[PRINCIPAL]


def bearer_user(request: web.Request) -> Principal | None:
    """The user of a valid bearer token, on a route open to anyone; None without one or
    with one that is not valid (such a request is anonymous there)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    try:
        return request.app[TOKENS].decode(token.strip())
    except Problem:
        return None


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check the bearer token and the role a route declares (see eventbook.endpoints)."""
    spec = endpoint_of(request)
    if spec is None or spec.roles is None:
        return await handler(request)
    header = single_header(request, hdrs.AUTHORIZATION) or ""
    scheme, _, token = header.partition(" ")
    if spec.roles == SCRAPER:
        _check_metrics_token(request, scheme, token.strip())
        return await handler(request)
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("unauthorized", "Sign in: send Authorization: Bearer <token>.")
    user = request.app[TOKENS].decode(token.strip())
    if user.role not in spec.roles:
        raise Problem(
            403, "forbidden_role", f"This needs the {' or '.join(spec.roles)} role."
        )
    request[PRINCIPAL] = user
    return await handler(request)


def _check_metrics_token(request: web.Request, scheme: str, token: str) -> None:
    """The bearer token must be EVENTBOOK_METRICS_TOKEN, compared in constant time so
    the answer's timing tells nothing of how much of a guess was right."""
    expected = request.app[CONFIG].metrics_token
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("unauthorized", "Send Authorization: Bearer <the metrics token>.")
    given = token.encode(errors="replace")
    if expected is None or not hmac.compare_digest(given, expected.encode()):
        raise _unauthorized("invalid_token", "The metrics token is not valid.")


# -- object-level rules: the one place that says who may touch what -------------------


def ensure_event_owner(user: Principal, organizer_id: uuid.UUID) -> None:
    """Only an event's organizer changes it, cancels it or reads its attendees."""
    if user.role != "organizer" or user.id != organizer_id:
        raise Problem(403, "not_event_owner", "Only the event's organizer may do this.")


def can_read_booking(user: Principal, customer_id: uuid.UUID, organizer_id: uuid.UUID) -> bool:
    """A booking is seen by its customer and, read only, by its event's organizer."""
    return user.id == customer_id or (user.role == "organizer" and user.id == organizer_id)
