"""The Pusher Channels HTTP API under `/apps/{app_id}/...` (SPEC §10): Pusher's signed query,
its routes and its error shape, so Pusher's server libraries work unchanged."""

PREFIX = "/apps"
