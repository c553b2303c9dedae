"""The marshmallow field types of request schemas: text PostgreSQL can store and mail
headers can carry, times with an offset, and currency codes."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import marshmallow
import pycountry
from marshmallow import fields


class Text(fields.String):
    """A string PostgreSQL can store: no NUL character and no lone surrogate, which the
    database or the driver would otherwise reject with a 500."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if "\x00" in text:
            raise marshmallow.ValidationError("Must not contain NUL characters.")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise marshmallow.ValidationError("Not valid Unicode text.") from None
        return text


# Characters that break a line or change how the text around them reads: the C0 and C1
# controls and DEL (Unicode category Cc), the line and paragraph separators, and the
# bidirectional formatting characters, which can make text read other than it is stored.
_BREAKS = "\t\n\r"
_OTHER_CONTROLS = (
    "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029"
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
)


class Line(Text):
    """One line of text people read (a title, a venue, a name), which may go into a mail
    header: no control characters, tabs and line breaks included (a CR or LF would end
    the header and make every mail carrying it fail)."""

    forbidden = re.compile(f"[{_BREAKS}{_OTHER_CONTROLS}]")

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        found = self.forbidden.search(text)
        if found:
            raise marshmallow.ValidationError(
                f"Must not contain control characters (found U+{ord(found.group()):04X})."
            )
        return text


class Prose(Line):
    """Text of several lines (a description): tabs and line breaks, and no other control
    characters."""

    forbidden = re.compile(f"[{_OTHER_CONTROLS}]")


class Moment(fields.AwareDateTime):
    """An ISO 8601 time with an offset (one without is refused), converted to UTC."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> dt.datetime:
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            return moment.astimezone(dt.UTC)
        except OverflowError:
            # e.g. 9999-12-31T23:00-05:00: valid ISO, but past the last representable year.
            raise marshmallow.ValidationError("Out of range.") from None


DEFAULT_CURRENCY = "EUR"


class Currency(fields.String):
    """An ISO 4217 currency code in use (pycountry's list), upper case: EUR, USD, JPY."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        code = super()._deserialize(value, attr, data, **kwargs)
        if not (len(code) == 3 and code.isascii() and code.isupper()
                and pycountry.currencies.get(alpha_3=code) is not None):
            raise marshmallow.ValidationError(
                "Must be an ISO 4217 currency code, such as EUR or USD."
            )
        return code
