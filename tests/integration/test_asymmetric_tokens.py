"""RS256 and ES256 tokens signed by an app's backend with its own private key and verified with
the public key it gave us (`token_rsa_public_key`, `token_ecdsa_public_key`), with the app's
optional `token_audience` and `token_issuer`."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.integration.test_access_controls import connected, refused_with
from tests.support.server import ServerProcess

Json = dict[str, Any]


def keypair(kind: str) -> tuple[Any, str]:
    private: Any = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "rsa"
        else ec.generate_private_key(ec.SECP256R1())
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


def signed(private: Any, alg: str, app: Json, user: str, **claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": user, "app_id": app["app_id"], "iat": now, "exp": now + 600, **claims}
    return jwt.encode(payload, private, algorithm=alg)


def update(server: ServerProcess, app: Json, **body: Any) -> httpx.Response:
    return httpx.put(
        f"{server.base_url}/api/applications/{app['app_id']}",
        json=body,
        headers={"X-API-Key": str(app["api_key"])},
    )


@pytest.mark.parametrize(
    ("kind", "alg", "field"),
    [("rsa", "RS256", "token_rsa_public_key"), ("ec", "ES256", "token_ecdsa_public_key")],
)
async def test_tokens_signed_with_the_apps_private_key(
    server: ServerProcess, kind: str, alg: str, field: str
) -> None:
    app = server.create_app(name=f"asym-{kind}")
    private, public = keypair(kind)
    # Before the key is known, such a token is refused.
    assert await refused_with(server, signed(private, alg, app, "u")) == 3500
    r = update(server, app, **{field: public})
    assert r.status_code == 200, r.text
    assert r.json()["application"][field] == public
    ws = await connected(server, signed(private, alg, app, "u"))
    await ws.close()
    # Another key's signature, or a token naming another app, is refused.
    stranger, _ = keypair(kind)
    assert await refused_with(server, signed(stranger, alg, app, "u")) == 3500
    other = server.create_app(name=f"asym-other-{kind}")
    assert await refused_with(server, signed(private, alg, other, "u")) == 3500


async def test_audience_and_issuer(server: ServerProcess) -> None:
    app = server.create_app(name="aud-iss")
    private, public = keypair("rsa")
    r = update(
        server,
        app,
        token_rsa_public_key=public,
        token_audience="chat-backend",
        token_issuer="https://auth.example.com",
    )
    assert r.status_code == 200, r.text
    good = signed(private, "RS256", app, "u", aud="chat-backend", iss="https://auth.example.com")
    ws = await connected(server, good)
    await ws.close()
    for claims in (
        {"aud": "other", "iss": "https://auth.example.com"},
        {"aud": "chat-backend", "iss": "https://evil.example.com"},
        {"iss": "https://auth.example.com"},
        {"aud": "chat-backend"},
    ):
        assert await refused_with(server, signed(private, "RS256", app, "u", **claims)) == 3500
    # Tokens the server mints for the app are the server's own: still accepted.
    minted = httpx.post(
        f"{server.base_url}/api/realtime/token",
        json={"userId": "u"},
        headers={"Authorization": f"apikey {app['api_key']}"},
    ).json()["token"]
    ws = await connected(server, minted)
    await ws.close()


@pytest.mark.parametrize(
    "body",
    [
        {"token_rsa_public_key": "not a key"},
        {"token_ecdsa_public_key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"},
        {"token_audience": "x" * 300},
    ],
)
def test_bad_keys_are_refused(server: ServerProcess, body: Json) -> None:
    app = server.create_app(name="bad-key")
    r = update(server, app, **body)
    assert r.status_code == 400 and r.json()["success"] is False, r.text


def test_a_key_of_the_wrong_kind_is_refused(server: ServerProcess) -> None:
    app = server.create_app(name="wrong-kind")
    _, ec_public = keypair("ec")
    r = update(server, app, token_rsa_public_key=ec_public)
    assert r.status_code == 400 and "RSA" in r.json()["error"], r.text
