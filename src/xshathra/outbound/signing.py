"""Signatures of outbound requests (SPEC §5, §9): `X-Xshathra-Signature: sha256=<hex
HMAC-SHA256 of "<timestamp>.<body>">` with a secret (a webhook's own, or the app secret for
backend proxies), and `X-Xshathra-Timestamp: <timestamp>`.

A receiver verifies with a few lines of standard HMAC code (see README, "Webhooks").
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Xshathra-Signature"
TIMESTAMP_HEADER = "X-Xshathra-Timestamp"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signed_headers(
    secret: str, timestamp: int, body: bytes, *, user_agent: str = "Xshathra-Webhooks/1"
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        TIMESTAMP_HEADER: str(timestamp),
        "User-Agent": user_agent,
    }


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver does; used by our own tests as the documented reference."""
    expected = (
        "sha256="
        + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    )
    return hmac.compare_digest(expected, signature)
