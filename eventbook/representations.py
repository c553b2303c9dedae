"""How the API shows bookings, holds and events: the response schemas that the route
modules answer with and the webhooks send as their `data`. Apart from the routes, so
that the worker, which serves no HTTP, can show them as the API does."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

STATUSES = ("scheduled", "cancelled")


class EventSchema(Schema):
    id = fields.UUID(required=True)
    organizer_id = fields.UUID(required=True)
    title = fields.String(required=True)
    description = fields.String(required=True)
    venue = fields.String(required=True, allow_none=True)
    starts_at = fields.AwareDateTime(required=True)
    ends_at = fields.AwareDateTime(required=True, allow_none=True)
    capacity = fields.Integer(required=True)
    available_tickets = fields.Integer(required=True)
    max_tickets_per_booking = fields.Integer(required=True)
    max_tickets_per_customer = fields.Integer(
        required=True, allow_none=True,
        metadata={"description": "Most tickets one customer may hold in confirmed bookings "
                                 "and live holds of the event; null: no limit."},
    )
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    version = fields.Integer(required=True)
    created_at = fields.AwareDateTime(required=True)
    updated_at = fields.AwareDateTime(required=True)
    currency = fields.String(
        required=True, metadata={"description": "ISO 4217: every price of the event is in it."}
    )


class ItemSchema(Schema):
    """One line of a booking or a hold: a ticket type, how many, at what price."""

    ticket_type_id = fields.UUID(required=True)
    name = fields.String(required=True, metadata={"description": "The ticket type's name."})
    quantity = fields.Integer(required=True)
    price_cents = fields.Integer(
        required=True, metadata={"description": "The price of one ticket when it was taken."}
    )


class TicketsSchema(Schema):
    """What a booking and a hold have alike: whose tickets, of which types, at what price."""

    id = fields.UUID(required=True)
    event_id = fields.UUID(required=True)
    user_id = fields.UUID(required=True)
    quantity = fields.Integer(required=True, metadata={"description": "Tickets, all items."})
    items = fields.List(fields.Nested(ItemSchema), required=True)
    total_cents = fields.Integer(
        required=True, metadata={"description": "The sum of the items' prices, frozen."}
    )
    currency = fields.String(required=True, metadata={"description": "ISO 4217."})
    created_at = fields.AwareDateTime(required=True)


class BookingSchema(TicketsSchema):
    status = fields.String(required=True, validate=validate.OneOf(("confirmed", "cancelled")))
    confirmation_status = fields.String(
        required=True, validate=validate.OneOf(("pending", "sent", "failed"))
    )
    confirmed_at = fields.AwareDateTime(
        required=True, allow_none=True,
        metadata={"description": "When the confirmation mail was sent."},
    )
    payment_reference = fields.String(
        required=True, allow_none=True,
        metadata={"description": "As given when the hold was confirmed."},
    )
    hold_id = fields.UUID(
        required=True, allow_none=True, metadata={"description": "The hold it was confirmed from."}
    )


class HoldSchema(TicketsSchema):
    status = fields.String(
        required=True, validate=validate.OneOf(("held", "confirmed", "released", "expired")),
        metadata={"description": "held: its tickets are taken until expires_at."},
    )
    expires_at = fields.AwareDateTime(
        required=True, metadata={"description": "When its tickets go back, unless confirmed."}
    )
    booking_id = fields.UUID(
        required=True, allow_none=True, metadata={"description": "Once confirmed."}
    )


EVENT = EventSchema()
BOOKING = BookingSchema()
HOLD = HoldSchema()
