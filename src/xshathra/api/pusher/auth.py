"""Pusher's signed query: `auth_key` (the app's `client_api_key`), `auth_timestamp` (within
600 s of now), `auth_version` 1.0, `body_md5` (of a non-empty body) and `auth_signature`
(HMAC-SHA256 with the app secret of "METHOD\\nPATH\\nsorted query"). A POST signature is
accepted once by the whole cluster within its validity window (`replay_mark`, kept in the
broker's shared store): a captured request cannot be replayed, on this node or another.
Pusher itself refuses only stale timestamps; the once-only rule costs a legitimate client
nothing, as Pusher's libraries sign every request afresh.
Messages never say what the signature should have been, nor anything of the secret.
"""

from __future__ import annotations

import hmac
import time

from xshathra.protocol import pusher as p
from xshathra.tenancy.apps import Application


class PusherAuthError(Exception):
    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


def replay_mark(
    app: Application, method: str, params: dict[str, str], *, now: float | None = None
) -> tuple[str, int] | None:
    """For a verified POST: the once-only mark its signature leaves in the cluster's shared
    store (`RateLimiter.first_use`), and how long it must live (until its timestamp leaves
    the window). A second request with the same mark is a replay. GETs change nothing: none."""
    if method.upper() == "GET":
        return None
    now = time.time() if now is None else now
    until = int(params["auth_timestamp"]) + p.AUTH_TIMESTAMP_GRACE
    return f"pusher-sig/{app.app_id}/{params['auth_signature']}", max(1, int(until - now) + 1)


def verify(
    app: Application | None,
    method: str,
    path: str,
    params: dict[str, str],
    body: bytes,
    *,
    now: float | None = None,
) -> Application:
    """The app, if the request is signed for it; else `PusherAuthError` (401, or 403 for a
    disabled app once the signature is right)."""
    now = time.time() if now is None else now
    key = params.get("auth_key", "")
    signature = params.get("auth_signature", "")
    if not key or not signature or "auth_timestamp" not in params:
        raise PusherAuthError(401, "Missing auth_key, auth_timestamp or auth_signature")
    if params.get("auth_version", "1.0") != "1.0":
        raise PusherAuthError(401, "Unsupported auth_version (1.0 expected)")
    # Unknown app and wrong key answer alike: the existence of an app id is not told.
    if app is None or not hmac.compare_digest(key.encode(), app.client_api_key.encode()):
        raise PusherAuthError(401, "Unknown auth_key")
    try:
        timestamp = int(params["auth_timestamp"])
    except ValueError:
        raise PusherAuthError(401, "Invalid auth_timestamp") from None
    if abs(now - timestamp) > p.AUTH_TIMESTAMP_GRACE:
        raise PusherAuthError(
            401,
            f"Timestamp expired: given timestamp ({timestamp}) not within "
            f"{p.AUTH_TIMESTAMP_GRACE}s of server time ({int(now)})",
        )
    if body:
        given_md5 = params.get("body_md5", "")
        if not hmac.compare_digest(given_md5.encode(), p.body_md5(body).encode()):
            raise PusherAuthError(401, "body_md5 does not match the body")
    expected = p.http_signature(app.app_secret, method, path, params)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise PusherAuthError(401, "Invalid signature")
    if not app.status:
        raise PusherAuthError(403, "Application disabled")
    return app
