"""Seed 001's error shape: `{"error": "..."}`."""

from __future__ import annotations

from typing import Any


def realtime_error(message: str, status: int) -> dict[str, Any]:
    return {"error": message}
