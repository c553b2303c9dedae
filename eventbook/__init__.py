"""eventbook: an event-booking server."""

__version__ = "0.1.0"
