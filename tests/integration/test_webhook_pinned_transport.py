"""DNS rebinding: outbound requests connect to the address that was checked, not to whatever
a second resolution answers. Real local HTTP(S) servers, real httpx, resolvers we control."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.receiver import Receiver
from xshathra.outbound.netguard import UnsafeURLError, guarded_client
from xshathra.storage.database import open_database
from xshathra.tenancy.apps import generate_app
from xshathra.webhooks.dispatcher import WebhookDispatcher
from xshathra.webhooks.models import NewDelivery, Webhook, new_webhook_id

PUBLIC = "93.184.215.14"  # a public address; nothing here listens on the receiver's port
TIMEOUT = httpx.Timeout(2.0)


async def test_a_name_resolving_to_public_then_loopback_never_reaches_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe: the first answer (checked) is public, later answers are 127.0.0.1. The
    dispatcher must connect to the checked address, so the loopback receiver sees nothing."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    asked: list[str] = []

    async def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host  # anyio passes IDNA bytes
        if name != "rebind.test":
            return await real(host, port, *args, **kwargs)
        asked.append(host)
        ip = PUBLIC if len(asked) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, int(port)))]

    monkeypatch.setattr(loop, "getaddrinfo", rebinding)
    db = await open_database(f"sqlite:///{tmp_path / 'rebind.db'}")
    dispatcher = WebhookDispatcher(db, "node-1", allow_private=False, timeout=1.0)
    try:
        app = generate_app(name="rebind", app_id="rebind")[0]
        await db.apps.create_app(app)
        with Receiver().running() as rx:
            hook = Webhook(
                id=new_webhook_id(),
                app_id="rebind",
                url=f"http://rebind.test:{rx.port}/hook",
                secret="whsec-rebind",
                events=("*",),
            )
            await db.webhooks.create_webhook(hook)
            await db.deliveries.enqueue(
                [NewDelivery("dlv_rebind", hook.id, "rebind", "evt_1", "e", "r", "{}")]
            )
            await dispatcher.start()
            deadline = time.monotonic() + 10
            while (await db.deliveries.list_for_webhook(hook.id))[0].attempts == 0:
                assert time.monotonic() < deadline, "no attempt recorded"
                await asyncio.sleep(0.02)
            assert rx.requests == []
            [row] = await db.deliveries.list_for_webhook(hook.id)
            assert row.last_error is not None and row.status == "pending"
            assert len(asked) == 1  # resolved once per attempt: the checked answer is used
    finally:
        await dispatcher.close()
        await db.close()


async def test_connects_to_the_resolved_address_and_keeps_the_host_name() -> None:
    asked: list[tuple[str, int]] = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["127.0.0.1"]

    with Receiver().running() as rx:
        async with guarded_client(allow_private=True, timeout=TIMEOUT, resolver=resolver) as client:
            r = await client.post(f"http://hooks.example.test:{rx.port}/hook", content=b"{}")
        assert r.status_code == 200
        [got] = rx.requests
    assert got.headers["Host"] == f"hooks.example.test:{rx.port}"
    assert asked == [("hooks.example.test", rx.port)]


@pytest.mark.parametrize(
    "answer", [["127.0.0.1"], [PUBLIC, "127.0.0.1"], ["64:ff9b::7f00:1"], ["::ffff:10.0.0.1"]]
)
async def test_every_resolved_address_is_checked_before_connecting(answer: list[str]) -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return answer

    with Receiver().running() as rx:
        async with guarded_client(
            allow_private=False, timeout=TIMEOUT, resolver=resolver
        ) as client:
            with pytest.raises(UnsafeURLError, match="private"):
                await client.post(f"http://hooks.example.test:{rx.port}/hook", content=b"{}")
        assert rx.requests == []


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, ssl.SSLContext]]:
    """An HTTPS server on 127.0.0.1 with a self-signed certificate for hooks.example.test."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=hooks.example.test",
         "-addext", "subjectAltName=DNS:hooks.example.test"],
        check=True, capture_output=True,
    )  # fmt: skip

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1]), ssl.create_default_context(cafile=str(cert))
    finally:
        server.shutdown()
        server.server_close()


async def test_tls_is_verified_against_the_host_name(
    tls_server: tuple[int, ssl.SSLContext],
) -> None:
    """Pinning the address keeps SNI and the certificate check on the URL's name."""
    port, trust = tls_server

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    async with guarded_client(
        allow_private=True, timeout=TIMEOUT, resolver=resolver, ssl_context=trust
    ) as client:
        r = await client.post(f"https://hooks.example.test:{port}/hook", content=b"{}")
        assert r.status_code == 204
        with pytest.raises(httpx.ConnectError):  # the certificate does not name this host
            await client.post(f"https://other.example.test:{port}/hook", content=b"{}")
