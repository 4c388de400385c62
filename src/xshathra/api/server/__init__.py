"""The Centrifugo-compatible server API under `/realtime/api`: the documented FastAPI routes
(`routes`) and the bare ASGI hot path that answers them in a running server (`engine_http`)."""

PREFIX = "/realtime/api"
