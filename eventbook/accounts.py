"""Accounts: register, log in, who am I."""

from __future__ import annotations

import unicodedata
from typing import Any

import asyncpg
import marshmallow
import structlog
from aiohttp import web
from marshmallow import Schema, fields, validate

from eventbook import db, emails
from eventbook.auth import ROLES, account_gone, principal
from eventbook.endpoints import PUBLIC, SIGNED_IN, endpoint, json_response
from eventbook.errors import Problem
from eventbook.fields import Line, Text
from eventbook.keys import CONFIG, PASSWORDS, POOL, RATE_LIMITER, TOKENS

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()


class UserSchema(Schema):
    id = fields.UUID(required=True)
    email = fields.Email(required=True)
    name = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    created_at = fields.AwareDateTime(required=True)


class EmailAddress(Text, fields.Email):
    """An address to register: text PostgreSQL can store, in NFC (the composed form most
    keyboards send, which the syntax check expects), with an e-mail address's syntax and a
    domain that is a valid internationalised domain name."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        address = unicodedata.normalize("NFC", super()._deserialize(value, attr, data, **kwargs))
        if "@" not in address:
            return address  # the syntax check says what is wrong with it
        try:
            emails.ascii_domain(address.rpartition("@")[2])
        except UnicodeError:
            raise marshmallow.ValidationError(
                "The domain is not a valid domain name (IDNA)."
            ) from None
        return address


class RegisterSchema(Schema):
    email = EmailAddress(required=True, validate=validate.Length(max=254))
    password = Text(required=True, validate=validate.Length(min=8, max=1024))
    name = Line(required=True, validate=validate.Length(min=1, max=200))
    role = fields.String(required=True, validate=validate.OneOf(ROLES))


class LoginSchema(Schema):
    email = Text(required=True, validate=validate.Length(min=1, max=254))
    password = Text(required=True, validate=validate.Length(min=1, max=1024))


class SessionSchema(Schema):
    user = fields.Nested(UserSchema, required=True)
    access_token = fields.String(required=True)
    token_type = fields.String(required=True, metadata={"example": "Bearer"})
    expires_in = fields.Integer(required=True, metadata={"description": "seconds"})


USER = UserSchema()
SESSION = SessionSchema()
CREATE_USER = db.query("user_create")
USER_BY_EMAIL_KEY = db.query("user_by_email_key")
SET_PASSWORD_HASH = db.query("user_set_password_hash")
USER_BY_ID = db.query("user_by_id")


def session(request: web.Request, user: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    tokens = request.app[TOKENS]
    answer: dict[str, Any] = SESSION.dump(
        {
            "user": user,
            "access_token": tokens.issue(user["id"], user["role"]),
            "token_type": "Bearer",
            "expires_in": tokens.ttl_seconds,
        }
    )
    return answer


async def create_user(
    pool: asyncpg.Pool, email: str, password_hash: str, name: str, role: str
) -> asyncpg.Record:
    """Insert a user; 409 email_taken when an address with the same key exists (in
    another letter case or Unicode form, see eventbook.emails)."""
    try:
        user = await pool.fetchrow(
            CREATE_USER, email, emails.key(email), name, role, password_hash,
        )
    except asyncpg.UniqueViolationError:
        raise Problem(409, "email_taken", "An account with this e-mail exists.") from None
    assert user is not None
    return user


@routes.post("/api/v1/auth/register")
@endpoint(
    "Create an account",
    roles=PUBLIC,
    body=RegisterSchema(),
    response=SESSION,
    status=201,
    problems={
        403: ["organizer_signup_disabled"],
        409: ["email_taken"],
        429: ["too_many_requests"],
        503: ["server_busy"],
    },
    tag="accounts",
)
async def register(request: web.Request, body: dict[str, Any]) -> web.Response:
    config = request.app[CONFIG]
    if config.signup_ip_limit:
        await request.app[RATE_LIMITER].enforce(
            "signup-ip", request.remote or "-", config.signup_ip_limit,
            config.signup_window_seconds,
            "Too many sign-ups from this address; wait and try again.",
        )
    if body["role"] == "organizer" and not config.organizer_signup:
        raise Problem(
            403, "organizer_signup_disabled",
            "Organizer accounts are created by an operator (eventbook user create).",
        )
    password_hash = await request.app[PASSWORDS].hash(body["password"])
    user = await create_user(
        request.app[POOL], body["email"], password_hash, body["name"], body["role"]
    )
    log.info("user_registered", user_id=str(user["id"]), role=user["role"])
    return json_response(session(request, user), status=201)


@routes.post("/api/v1/auth/login")
@endpoint(
    "Log in",
    roles=PUBLIC,
    body=LoginSchema(),
    response=SESSION,
    problems={
        401: ["invalid_credentials"], 429: ["too_many_requests"], 503: ["server_busy"]
    },
    tag="accounts",
)
async def login(request: web.Request, body: dict[str, Any]) -> web.Response:
    config = request.app[CONFIG]
    limiter = request.app[RATE_LIMITER]
    email_key = emails.key(body["email"])
    detail = "Too many login attempts; wait and try again."
    await limiter.enforce(
        "login-ip", request.remote or "-", config.login_ip_limit, config.login_window_seconds,
        detail,
    )
    await limiter.enforce(
        "login-email", email_key, config.login_limit, config.login_window_seconds, detail
    )
    row = await request.app[POOL].fetchrow(USER_BY_EMAIL_KEY, email_key)
    passwords = request.app[PASSWORDS]
    ok = await passwords.verify(row["password_hash"] if row else None, body["password"])
    if row is None or not ok:
        log.info("login_failed")
        raise Problem(401, "invalid_credentials", "The e-mail or password is wrong.")
    if passwords.needs_rehash(row["password_hash"]):
        new_hash = await passwords.rehash(body["password"])
        await request.app[POOL].execute(SET_PASSWORD_HASH, row["id"], new_hash)
        log.info("password_rehashed", user_id=str(row["id"]))
    await limiter.reset("login-email", email_key)
    log.info("login_succeeded", user_id=str(row["id"]))
    return json_response(session(request, row))


@routes.get("/api/v1/me")
@endpoint("The signed-in user", roles=SIGNED_IN, response=USER, tag="accounts")
async def me(request: web.Request) -> web.Response:
    user = await request.app[POOL].fetchrow(USER_BY_ID, principal(request).id)
    if user is None:
        raise account_gone()
    return json_response(USER.dump(user))
