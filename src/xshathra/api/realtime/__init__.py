"""The seed realtime API (seed 001): connection and subscription tokens and the publish proxy,
under `/api/realtime`."""

PREFIX = "/api/realtime"
