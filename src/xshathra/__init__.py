"""Xshathra: a multi-tenant realtime messaging server speaking the Centrifuge protocol."""

__version__ = "0.1.0"
