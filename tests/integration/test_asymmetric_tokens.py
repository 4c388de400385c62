"""RS256 and ES256 tokens signed by an app's backend with its own private key and verified with
the public key it gave us (`token_rsa_public_key`, `token_ecdsa_public_key`), with the app's
optional `token_audience` and `token_issuer`."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


class JwksServer:
    """Serves a JWKS document on 127.0.0.1 and counts the fetches."""

    def __init__(self) -> None:
        self.keys: list[Json] = []
        self.fetches = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != owner.path:  # not our server asking (a reused port, say)
                    self.send_error(404)
                    return
                owner.fetches += 1
                body = json.dumps({"keys": owner.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A path of its own: only the URL given to the app counts as a fetch.
        self.path = f"/jwks-{secrets.token_hex(6)}.json"
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}{self.path}"

    def publish(self, private: Any, kid: str, alg: str) -> None:
        algorithm = jwt.algorithms.RSAAlgorithm if alg == "RS256" else jwt.algorithms.ECAlgorithm
        jwk = json.loads(algorithm.to_jwk(private.public_key()))
        self.keys.append({**jwk, "kid": kid, "use": "sig", "alg": alg})

    @contextmanager
    def running(self) -> Iterator[JwksServer]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()


async def test_keys_from_a_jwks_url_are_fetched_and_cached(server: ServerProcess) -> None:
    app = server.create_app(name="jwks")
    rsa_key, _ = keypair("rsa")
    ec_key, _ = keypair("ec")
    with JwksServer().running() as jwks:
        jwks.publish(rsa_key, "k1", "RS256")
        r = update(server, app, token_jwks_url=jwks.url)
        assert r.status_code == 200 and r.json()["application"]["token_jwks_url"] == jwks.url
        for _ in range(3):
            token = jwt.encode(
                {"sub": "u", "app_id": app["app_id"], "exp": int(time.time()) + 600},
                rsa_key,
                algorithm="RS256",
                headers={"kid": "k1"},
            )
            ws = await connected(server, token)
            await ws.close()
        assert jwks.fetches == 1  # cached
        # A key published later (rotation at the app): an unknown kid fetches again.
        jwks.publish(ec_key, "k2", "ES256")
        token = jwt.encode(
            {"sub": "u", "app_id": app["app_id"], "exp": int(time.time()) + 600},
            ec_key,
            algorithm="ES256",
            headers={"kid": "k2"},
        )
        ws = await connected(server, token)
        await ws.close()
        assert jwks.fetches == 2
        # A kid nobody published is refused, and fetching again is rate-limited.
        stranger, _ = keypair("rsa")
        forged = jwt.encode(
            {"sub": "u", "app_id": app["app_id"], "exp": int(time.time()) + 600},
            stranger,
            algorithm="RS256",
            headers={"kid": "k9"},
        )
        for _ in range(3):
            assert await refused_with(server, forged) == 3500
        assert jwks.fetches == 2


def test_a_jwks_url_must_be_http(server: ServerProcess) -> None:
    app = server.create_app(name="jwks-bad")
    r = update(server, app, token_jwks_url="file:///etc/passwd")
    assert r.status_code == 400 and "token_jwks_url" in r.json()["error"], r.text
