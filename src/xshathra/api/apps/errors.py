"""Seed 000's error shape, `{"success": false, "error": "..."}`: the apps API's, and the one
of any path that belongs to no surface."""

from __future__ import annotations

from typing import Any


def apps_error(message: str, status: int) -> dict[str, Any]:
    return {"success": False, "error": message}
