"""JWTs: minting (for `/api/token` and `/api/realtime/*token`) and verification (for the engine).

The server signs HS256 with its own HMAC secret; an app's backend may also sign HS256 with its
`app_secret`, or RS256/ES256 with its own private key (we hold the public key). Every token
names its `app_id`, and verification pins a token to the app it names, so a token of app A can
never act on app B.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt
import msgspec
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from xshathra.model import AppId
from xshathra.tenancy.apps import Application
from xshathra.tenancy.jwks import JwksCache

ALGORITHM = "HS256"
API_TOKEN_TTL = 86400
REALTIME_TTL_DEFAULT = 900
REALTIME_TTL_MIN = 30
REALTIME_TTL_MAX = 3600
LEEWAY_SECONDS = 5
MAX_EXP = 253_402_300_799  # 9999-12-31T23:59:59Z: later is no real expiry time

# Claims the server owns; a caller's payload can never override them.
_SERVER_CLAIMS = frozenset({"app_id", "iat", "exp"})


class TokenError(Exception):
    """The token is malformed, wrongly signed, or names no usable app."""


class TokenExpiredError(TokenError):
    """The token's `exp` has passed: the client should fetch a new one (Centrifuge code 109)."""


@dataclass(frozen=True, slots=True)
class MintedToken:
    token: str
    issued_at: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class ConnectionClaims:
    app_id: AppId
    user: str
    expires_at: int | None
    info: bytes | None  # raw JSON, passed through to presence and join/leave untouched
    channels: tuple[str, ...]
    token_id: str = ""  # `jti`: what revoke_token names
    issued_at: int | None = None  # `iat`: what invalidate_user_tokens compares


@dataclass(frozen=True, slots=True)
class SubscriptionClaims:
    app_id: AppId
    user: str
    channel: str
    expires_at: int | None
    info: bytes | None
    token_id: str = ""  # `jti`: revoke_token applies to subscription tokens too
    issued_at: int | None = None  # `iat`: invalidate_user_tokens with `channel` compares it


class TokenService:
    """Mints and verifies the tokens of every app, given the server's HMAC secret."""

    def __init__(
        self,
        hmac_secret: str,
        previous_hmac_secret: str | None = None,
        jwks: JwksCache | None = None,
    ) -> None:
        self._secret = hmac_secret
        self._jwks = jwks
        # During a rotation of the deployment secret (XSHATHRA_TOKEN_HMAC_PREVIOUS_SECRET):
        # tokens signed with the old one still verify; new tokens are signed with the new one.
        self._server_secrets = (
            (hmac_secret, previous_hmac_secret) if previous_hmac_secret else (hmac_secret,)
        )

    # --- minting -------------------------------------------------------------------------

    def _sign(self, claims: dict[str, Any], ttl: int) -> MintedToken:
        now = int(time.time())
        claims = {**claims, "iat": now, "exp": now + ttl}
        return MintedToken(jwt.encode(claims, self._secret, algorithm=ALGORITHM), now, now + ttl)

    def mint_api_token(self, app_id: AppId, payload: dict[str, Any] | None) -> MintedToken:
        """Seed 000 `/api/token`: the caller's payload under the server's claims."""
        claims = {k: v for k, v in (payload or {}).items() if k not in _SERVER_CLAIMS}
        user_id = claims.get("user_id")
        if user_id is not None and "sub" not in claims:
            claims["sub"] = str(user_id)
        claims.setdefault("sub", "")
        claims["app_id"] = app_id
        return self._sign(claims, API_TOKEN_TTL)

    def mint_connection_token(
        self,
        app_id: AppId,
        user_id: str,
        ttl: int,
        channels: list[str] | None = None,
        info: Any = None,
    ) -> MintedToken:
        # A jti of its own, so that revoke_token can name this one token.
        claims: dict[str, Any] = {"sub": user_id, "app_id": app_id, "jti": secrets.token_hex(12)}
        if channels:
            claims["channels"] = channels
        if info is not None:
            claims["info"] = info
        return self._sign(claims, ttl)

    def mint_subscription_token(
        self, app_id: AppId, user_id: str, channel: str, ttl: int, info: Any = None
    ) -> MintedToken:
        # A jti of its own here too: revoke_token names subscription tokens as well.
        claims: dict[str, Any] = {
            "sub": user_id,
            "app_id": app_id,
            "channel": channel,
            "jti": secrets.token_hex(12),
        }
        if info is not None:
            claims["info"] = info
        return self._sign(claims, ttl)

    # --- verification --------------------------------------------------------------------

    @staticmethod
    def peek_app_id(token: str) -> str:
        """The `app_id` a token claims, before its signature is checked (to find the app)."""
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise TokenError("malformed token") from exc
        app_id = claims.get("app_id")
        if not isinstance(app_id, str) or not app_id:
            raise TokenError("token has no app_id")
        return app_id

    async def prepare(self, token: str, app: Application) -> None:
        """Before a sync verification: fetch the app's JWKS keys if the token may need them
        (an RS256/ES256 token of an app with a `token_jwks_url`). Never raises."""
        if self._jwks is None or not app.token_jwks_url:
            return
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return
        if header.get("alg") in ("RS256", "ES256"):
            kid = header.get("kid")
            await self._jwks.ensure(app.token_jwks_url, kid if isinstance(kid, str) else "")

    def _decode(self, token: str, app: Application) -> dict[str, Any]:
        """Verify by the token's algorithm: HS256 with the server secret (and its predecessor
        during a rotation), then the app's own secret (and its predecessor during its grace);
        RS256 and ES256 with the app's public key. Tokens the app signs itself must carry the
        app's `token_audience` and `token_issuer` when it has them."""
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError as exc:
            raise TokenError("malformed token") from exc
        if alg == ALGORITHM:
            for key in self._server_secrets:
                claims = self._try(token, key, ALGORITHM, app, own=False)
                if claims is not None:
                    return claims
            for key in app.token_secrets(time.time()):
                claims = self._try(token, key, ALGORITHM, app, own=True)
                if claims is not None:
                    return claims
            raise TokenError("invalid token signature")
        if alg not in ("RS256", "ES256"):
            raise TokenError("algorithm not accepted")
        keys: list[Any] = []
        pem = app.token_rsa_public_key if alg == "RS256" else app.token_ecdsa_public_key
        if pem is not None:
            keys.append(_public_key(pem))
        if self._jwks is not None and app.token_jwks_url:
            kid = jwt.get_unverified_header(token).get("kid")
            published = self._jwks.key(app.token_jwks_url, kid if isinstance(kid, str) else "")
            if published is not None:
                keys.append(published)
        if not keys:
            raise TokenError("no key of this app verifies this algorithm")
        for key in keys:
            try:
                claims = self._try(token, key, str(alg), app, own=True)
            except TokenError:
                if len(keys) == 1:
                    raise
                continue  # a key of the other kind (RSA vs EC), say
            if claims is not None:
                return claims
        raise TokenError("invalid token signature")

    @staticmethod
    def _try(
        token: str, key: Any, algorithm: str, app: Application, *, own: bool
    ) -> dict[str, Any] | None:
        """The claims if `key` signed the token (None if it did not); raises for a token that
        is signed right but invalid (expired, another app, wrong aud/iss)."""
        audience = app.token_audience if own else None
        issuer = app.token_issuer if own else None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                leeway=LEEWAY_SECONDS,
                audience=audience,
                issuer=issuer,
                options={
                    "require": [],
                    "verify_aud": audience is not None,
                    "verify_iss": issuer is not None,
                },
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenExpiredError("token expired") from exc
        except jwt.InvalidSignatureError:
            return None
        except (jwt.PyJWTError, OverflowError, ValueError) as exc:
            # OverflowError: PyJWT's int(exp) on an infinite exp.
            raise TokenError("invalid token") from exc
        if claims.get("app_id") != app.app_id:
            raise TokenError("token is for another app")
        return claims

    def verify_connection_token(self, token: str, app: Application) -> ConnectionClaims:
        claims = self._decode(token, app)
        if "channel" in claims:
            raise TokenError("a subscription token cannot open a connection")
        sub = claims.get("sub", "")
        channels = claims.get("channels", [])
        if not isinstance(sub, str):
            raise TokenError("sub must be a string")
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise TokenError("channels must be a list of strings")
        return ConnectionClaims(
            app_id=app.app_id,
            user=_text(sub, "sub"),
            expires_at=_expiry(claims),
            info=_info(claims),
            channels=tuple(_text(c, "channels") for c in channels),
            token_id=_token_id(claims),
            issued_at=_issued_at(claims),
        )

    def verify_subscription_token(self, token: str, app: Application) -> SubscriptionClaims:
        claims = self._decode(token, app)
        sub = claims.get("sub", "")
        channel = claims.get("channel")
        if not isinstance(sub, str):
            raise TokenError("sub must be a string")
        if not isinstance(channel, str) or not channel:
            raise TokenError("subscription token has no channel")
        return SubscriptionClaims(
            app_id=app.app_id,
            user=_text(sub, "sub"),
            channel=_text(channel, "channel"),
            expires_at=_expiry(claims),
            info=_info(claims),
            token_id=_token_id(claims),
            issued_at=_issued_at(claims),
        )


_public_keys: dict[str, Any] = {}


def _public_key(pem: str) -> Any:
    """The parsed key of a PEM, kept: parsing on every connect would cost more than verifying.
    Bounded: a key that changed is parsed again, the cache is cleared past 1,000 keys."""
    key = _public_keys.get(pem)
    if key is None:
        try:
            key = serialization.load_pem_public_key(pem.encode())
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise TokenError("the app's public key is unusable") from exc
        if len(_public_keys) >= 1000:
            _public_keys.clear()
        _public_keys[pem] = key
    return key


def _expiry(claims: dict[str, Any]) -> int | None:
    exp = claims.get("exp")
    if exp is None:
        return None
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise TokenError("exp must be a number")
    # An absurd exp (10^30, infinity) would overflow the timers and the protocol's ttl field
    # later, after a subscription was half made: refuse it here, as any invalid token.
    if not exp <= MAX_EXP:  # also false for NaN
        raise TokenError("exp out of range")
    return int(exp)


def _token_id(claims: dict[str, Any]) -> str:
    jti = claims.get("jti", "")
    if not isinstance(jti, str):
        raise TokenError("jti must be a string")
    return _text(jti, "jti")


def _issued_at(claims: dict[str, Any]) -> int | None:
    iat = claims.get("iat")
    if iat is None:
        return None
    if not isinstance(iat, int | float) or isinstance(iat, bool) or not -MAX_EXP <= iat <= MAX_EXP:
        raise TokenError("iat must be a number")
    return int(iat)


def _info(claims: dict[str, Any]) -> bytes | None:
    info = claims.get("info")
    if info is None:
        return None
    try:
        return msgspec.json.encode(info)
    except (UnicodeEncodeError, TypeError, ValueError, OverflowError):
        raise TokenError("info must be encodable JSON") from None


def _text(value: str, name: str) -> str:
    """A claim that goes on the wire as text must be valid UTF-8 (JSON allows lone surrogates,
    which could not be sent to anyone afterwards)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise TokenError(f"{name} is not valid text") from None
    return value
