"""Issue 11, Low: what a client learns before it is authenticated, and subscription tokens
with an absurd `exp`, against a real node.

- A connect with a token that does not verify must not tell a disabled app from an enabled
  one, nor reveal an app's allowed domain: one refusal for every such case. The app's own
  (authentic) tokens may still be told why (test_engine_access).
- A subscription token whose `exp` is absurd (10^30, or infinite) was accepted by the token
  check and then failed while arming its timer, leaving a pending subscription behind that
  buffered publications (and made the channel "already subscribed"). It is refused as an
  invalid token, and nothing stays behind.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import jwt
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.integration.test_engine_bad_input import connect, replies, reply
from tests.support.clients import engine_api, realtime_token
from tests.support.server import ServerProcess

Json = dict[str, Any]


def forged(app_id: str) -> str:
    """A token naming `app_id`, signed with a key the server does not know."""
    return jwt.encode({"sub": "u", "app_id": app_id}, "not-the-key-" * 4, algorithm="HS256")


async def refusal(server: ServerProcess, token: str, origin: str | None = None) -> tuple[int, str]:
    """The close code and reason a connect with `token` gets."""
    async with websockets.connect(server.ws_url, origin=origin) as ws:  # type: ignore[arg-type]
        await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await ws.recv()
        assert info.value.rcvd is not None
        return info.value.rcvd.code, info.value.rcvd.reason


async def test_unauthenticated_connects_all_get_the_same_refusal(server: ServerProcess) -> None:
    enabled = server.create_app(name="enabled")
    disabled = server.create_app(name="disabled")
    r = httpx.put(
        f"{server.base_url}/api/applications/{disabled['app_id']}",
        headers=server.admin_headers(),
        json={"status": False},
    )
    assert r.status_code == 200, r.text
    fenced = server.create_app(name="fenced", allowed_domain="example.com")
    seen = {
        "unknown app": await refusal(server, forged("no-such-app")),
        "enabled app": await refusal(server, forged(str(enabled["app_id"]))),
        "disabled app": await refusal(server, forged(str(disabled["app_id"]))),
        "other origin": await refusal(server, forged(str(fenced["app_id"])), "https://evil.io"),
        "its origin": await refusal(server, forged(str(fenced["app_id"])), "https://example.com"),
    }
    assert set(seen.values()) == {(3500, "invalid token")}, seen


@pytest.mark.parametrize("exp", [10**30, 1e300, float("inf")], ids=["1e30", "1e300", "inf"])
async def test_a_subscription_token_with_an_absurd_exp_leaves_nothing_behind(
    server: ServerProcess, exp: float
) -> None:
    app = server.create_app(name="absurd-exp")
    secret = str(app["app_secret"])
    claims = {"sub": "u", "app_id": app["app_id"], "channel": "room", "iat": int(time.time())}
    absurd = jwt.encode({**claims, "exp": exp}, secret, algorithm="HS256")
    good = jwt.encode({**claims, "exp": int(time.time()) + 600}, secret, algorithm="HS256")
    async with websockets.connect(server.ws_url) as ws:
        await connect(ws, realtime_token(server, app, "u"))
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "room", "token": absurd}}))
        refused = await reply(ws)
        assert refused["id"] == 2 and refused.get("error", {}).get("code") == 103, refused
        # Nothing stayed behind: the channel has no subscriber, and a good token subscribes.
        channels = engine_api(server, app, "channels", {})
        assert "room" not in channels["result"]["channels"], channels
        await ws.send(json.dumps({"id": 3, "subscribe": {"channel": "room", "token": good}}))
        assert "subscribe" in await reply(ws)
        engine_api(server, app, "publish", {"channel": "room", "data": "once"})
        engine_api(server, app, "publish", {"channel": "room", "data": "twice"})
        pubs = [m["push"]["pub"]["data"] for m in await replies(ws, 2)]
        assert pubs == ["once", "twice"]
