"""What keeps the dashboard's pages safe: cookies, CSRF tokens, form parsing and headers.

Signed-in forms carry the session's CSRF token; the sign-in and sign-up forms, which have no
session yet, carry a token that must match a cookie of their own (double submit), so a form
posted from another site is refused either way.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

SESSION_COOKIE = "xs_session"
FLASH_COOKIE = "xs_once"  # a secret made by a POST, for the page it redirects to (read once)
FLASH_AGE = 120  # seconds
FORM_COOKIE = "xs_form"  # CSRF token of the signed-out forms
COOKIE_PATH = "/dashboard"
MAX_FORM_BYTES = 16 * 1024
MAX_FORM_FIELDS = 20

# No inline script anywhere: scripts and styles come from our own files only.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Invitation links carry their token: never hand a URL of ours to another site.
    "Referrer-Policy": "no-referrer",
}


class FormError(Exception):
    """The request body is not a form this dashboard could have sent."""


def is_https(request: Request) -> bool:
    """Whether the person reached us over HTTPS. Only the request's own scheme counts: a
    forwarded header is trusted only once trusted proxies are configured."""
    return request.url.scheme == "https"


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=is_https(request),
    )


def clear_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(
        name, path=COOKIE_PATH, httponly=True, samesite="lax", secure=is_https(request)
    )


def set_flash(response: Response, request: Request, path: str, value: str) -> None:
    """Hand a secret made by a POST (a new key) to the page the POST redirects to, so that the
    change is not repeated by a reload and the secret is never in a URL. Scoped to that page's
    path, HttpOnly, SameSite=Strict, for two minutes; the page clears it once read."""
    response.set_cookie(
        FLASH_COOKIE,
        value,
        max_age=FLASH_AGE,
        path=path,
        httponly=True,
        samesite="strict",
        secure=is_https(request),
    )


def read_flash(request: Request) -> str | None:
    return request.cookies.get(FLASH_COOKIE)


def clear_flash(response: Response, request: Request, path: str) -> None:
    response.delete_cookie(
        FLASH_COOKIE, path=path, httponly=True, samesite="strict", secure=is_https(request)
    )


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same_token(sent: str | None, expected: str | None) -> bool:
    """Constant-time comparison; a missing token never matches."""
    if not sent or not expected:
        return False
    return hmac.compare_digest(sent.encode(), expected.encode())


async def read_form(request: Request) -> dict[str, str]:
    """The fields of a URL-encoded form (first value of each), bounded in size and count.

    Parsed here rather than with a multipart library: the dashboard's forms post only
    `application/x-www-form-urlencoded`, and anything else is not one of our forms."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise FormError("not a form")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormError("form too large")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise FormError("not a form") from None
    fields: dict[str, str] = {}
    for key, value in pairs:
        fields.setdefault(key, value)
    return fields
