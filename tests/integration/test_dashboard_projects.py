"""The dashboard's projects over httpx against a real node: creating a project gives a working
server key once; roles (owner, developer, viewer) decide what each member may see and change;
another account's project answers 404; a viewer never receives a secret; CSRF is required on
every change; webhooks, namespaces, settings and the console's token and publish work."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.integration.test_dashboard_http import PASSWORD, sign_in, sign_up
from tests.support.receiver import Receiver
from tests.support.server import ServerProcess, running_server

OWNER, DEV, VIEWER, STRANGER = (
    "owner@example.com",
    "dev@example.com",
    "viewer@example.com",
    "stranger@example.com",
)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no csrf_token in the page"
    return found.group(1)


def post(http: httpx.Client, path: str, page: str, **fields: str) -> httpx.Response:
    """POST a form of the dashboard with the CSRF token of `page` (a path to GET first)."""
    token = csrf_of(http.get(page).text)
    return http.post(path, data={"csrf_token": token, **fields})


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(
        tmp_path_factory.mktemp("projects"), env={"XSHATHRA_SIGNUP": "open"}
    ) as proc:
        yield proc


@pytest.fixture(scope="module")
def people(node: ServerProcess) -> Iterator[dict[str, httpx.Client]]:
    clients = {}
    for email in (OWNER, DEV, VIEWER, STRANGER):
        http = httpx.Client(base_url=node.base_url)
        assert sign_up(http, email).status_code == 303
        clients[email] = http
    try:
        yield clients
    finally:
        for http in clients.values():
            http.close()


@pytest.fixture(scope="module")
def project(people: dict[str, httpx.Client], node: ServerProcess) -> dict[str, str]:
    """A project of OWNER's with DEV as developer and VIEWER as viewer; its server key."""
    owner = people[OWNER]
    created = post(owner, "/dashboard/projects", "/dashboard/projects", name="Shop chat")
    assert created.status_code == 303, created.text  # a reload repeats nothing
    assert "xs_" not in created.headers["location"]  # the key is never in a URL
    shown = owner.get(created.headers["location"])
    key = re.search(r'id="server-key" type="text" readonly value="(xs_[^"]+)"', shown.text)
    app_id = re.search(r"App ID <code>([^<]+)</code>", shown.text)
    assert key and app_id
    again = owner.get(created.headers["location"])  # the same page again: only the hint
    assert key.group(1) not in again.text and 'id="server-key"' not in again.text
    base = f"/dashboard/projects/{app_id.group(1)}"
    for email, role in ((DEV, "developer"), (VIEWER, "viewer")):
        added = post(owner, base + "/members", base + "/members", email=email, role=role)
        assert added.status_code == 303, added.text
    return {"app_id": app_id.group(1), "key": key.group(1), "base": base}


def test_created_project_key_works_once_and_then_only_its_hint(
    node: ServerProcess, people: dict[str, httpx.Client], project: dict[str, str]
) -> None:
    """The key shown at creation broadcasts over the HTTP API; the overview shows its hint
    only; the project is on the owner's Projects page and on the operator's as everyone's."""
    sent = httpx.post(
        f"{node.base_url}/api/broadcast",
        headers={"X-App-API-Key": project["key"]},
        json={"room": "public:lobby", "event": "message", "data": {"text": "hi"}},
    )
    assert sent.status_code == 200, sent.text
    overview = people[OWNER].get(project["base"])
    assert overview.status_code == 200
    assert project["key"] not in overview.text
    assert f"xs_…{project['key'][-4:]}" in overview.text
    listing = people[OWNER].get("/dashboard/projects").text
    assert "Shop chat" in listing and project["app_id"] in listing
    # A forged hand-over cookie shows nothing: only the app's current key is ever shown.
    people[OWNER].cookies.set("xs_once", "xs_forged", path=project["base"])
    forged = people[OWNER].get(project["base"])
    assert "xs_forged" not in forged.text and 'id="server-key"' not in forged.text
    assert "xs_once=" in forged.headers["set-cookie"]  # cleared
    people[OWNER].cookies.delete("xs_once", path=project["base"])


def test_another_accounts_project_answers_404_everywhere(
    people: dict[str, httpx.Client], project: dict[str, str]
) -> None:
    """A stranger gets 404 on every page and every action of the project, as for an app id
    that does not exist; nothing about it is in the answer."""
    stranger = people[STRANGER]
    base = project["base"]
    pages = ("", "/settings", "/webhooks", "/console", "/console/events", "/members")
    for path in (*pages, "/analytics.json"):
        answer = stranger.get(base + path)
        assert answer.status_code == 404, path
        assert "Shop chat" not in answer.text
    token = csrf_of(stranger.get("/dashboard/projects").text)
    actions = ("/secret", "/regenerate", "/regenerate-client-key", "/regenerate-secret")
    for path in (*actions, "/quotas", "/settings", "/delete", "/console/token"):
        answer = stranger.post(base + path, data={"csrf_token": token, "confirm": "on"})
        assert answer.status_code == 404, path
    assert stranger.get("/dashboard/projects/app_nope").status_code == 404
    assert project["app_id"] not in stranger.get("/dashboard/projects").text


def test_viewer_never_receives_a_secret(
    people: dict[str, httpx.Client], project: dict[str, str], node: ServerProcess
) -> None:
    """No page a viewer can open holds the client key, the app secret or a webhook secret,
    and the viewer's attempts to reveal or regenerate are refused."""
    owner, viewer = people[OWNER], people[VIEWER]
    base = project["base"]
    revealed = post(owner, base + "/secret", base)
    secret = re.search(r'id="app-secret" type="text" readonly value="([^"]+)"', revealed.text)
    client_key = re.search(r'id="client-key" type="text" readonly value="([^"]+)"', revealed.text)
    assert secret and client_key
    hook = post(
        owner, base + "/webhooks", base + "/webhooks", url="https://example.com/h", event_all="on"
    )
    assert hook.status_code == 303
    assert "whsec_" in owner.get(hook.headers["location"]).text  # shown to its maker, once
    secrets = [secret.group(1), client_key.group(1)]
    seen = ""
    for path in ("", "/settings", "/webhooks", "/console", "/members", "/analytics.json"):
        answer = viewer.get(base + path)
        assert answer.status_code == 200, path
        seen += answer.text
    seen += viewer.get("/dashboard/projects").text
    for value in secrets:
        assert value not in seen
    assert "whsec_" not in seen
    assert "Hidden from viewers" in seen
    for path in ("/secret", "/regenerate", "/settings", "/namespaces", "/webhooks"):
        answer = post(viewer, base + path, base, confirm="on", url="https://x.example")
        assert answer.status_code == 403, path
        assert secret.group(1) not in answer.text
    assert (
        post(viewer, base + "/console/publish", base, channel="a", message="x").status_code == 403
    )


def test_developer_changes_settings_but_not_members_or_deletion(
    people: dict[str, httpx.Client], project: dict[str, str]
) -> None:
    """A developer sees the secret and saves settings and namespaces (a bad value is shown
    beside its field), and is refused members and deletion."""
    dev = people[DEV]
    base = project["base"]
    assert post(dev, base + "/secret", base).status_code == 200
    bad = post(
        dev,
        base + "/settings",
        base + "/settings",
        name="Shop chat",
        allowed_domain="not a domain",
        rate_limit="500",
        enabled="on",
    )
    assert bad.status_code == 400
    assert 'id="allowed_domain-error"' in bad.text
    assert 'value="not a domain"' in bad.text  # kept for fixing, not retyped
    ok = post(
        dev,
        base + "/settings",
        base + "/settings",
        name="Shop chat (renamed)",
        allowed_domain="example.com",
        rate_limit="500",
        enabled="on",
    )
    assert ok.status_code == 303
    page = dev.get(base + "/settings").text
    assert 'value="example.com"' in page and 'value="500"' in page
    assert "<h1>Shop chat (renamed)</h1>" in page  # a developer renames, as SPEC §7 has it
    post(
        dev,
        base + "/settings",
        base + "/settings",
        name="Shop chat",
        rate_limit="500",
        enabled="on",
    )
    too_long = post(
        dev, base + "/namespaces", base + "/settings", namespace="chat", history_size="99999"
    )
    assert too_long.status_code == 400
    assert 'id="ns-history_size-error"' in too_long.text
    assert "history_size must be from 0 to 10000" in too_long.text
    saved = post(
        dev,
        base + "/namespaces",
        base + "/settings",
        namespace="chat",
        history_size="50",
        history_ttl="60",
        presence="on",
    )
    assert saved.status_code == 303
    assert "<code>chat</code>" in dev.get(base + "/settings").text
    assert (
        post(dev, base + "/members", base, email="x@example.com", role="viewer").status_code == 403
    )
    assert post(dev, base + "/delete", base, confirm_name="Shop chat").status_code == 403


def test_every_change_needs_the_csrf_token(
    people: dict[str, httpx.Client], project: dict[str, str]
) -> None:
    owner = people[OWNER]
    base = project["base"]
    for path in (
        "/secret",
        "/regenerate",
        "/delete",
        "/console/publish",
        "/console/token",
        "/members",
        "/webhooks",
        "/namespaces",
        "/proxies",
        "/proxies/delete",
        "/proxies/client",
        "/proxies/rpc",
        "/proxies/rpc/delete",
    ):
        answer = owner.post(base + path, data={"confirm": "on", "confirm_name": "Shop chat"})
        assert answer.status_code == 403, path
        assert "cannot be accepted" in answer.text
    refused = owner.post("/dashboard/projects", data={"name": "no token"})
    assert refused.status_code == 403
    assert "no token" not in owner.get("/dashboard/projects").text
    assert owner.get(base).status_code == 200  # not deleted


def test_webhook_test_event_is_delivered_and_listed(
    people: dict[str, httpx.Client], project: dict[str, str], tmp_path: Path
) -> None:
    """A webhook pointed at a local receiver gets the test event; the webhook page lists the
    delivery with its status and attempts; disabling and deleting work."""
    owner = people[OWNER]
    base = project["base"]
    with Receiver().running() as receiver:
        added = post(
            owner, base + "/webhooks", base + "/webhooks", url=receiver.url, event_all="on"
        )
        assert added.status_code == 303
        listing = owner.get(added.headers["location"]).text
        hook_id = re.findall(r"/webhooks/(webhook_[A-Za-z0-9_]+)\"", listing)[-1]
        page = f"{base}/webhooks/{hook_id}"
        assert post(owner, page + "/test", page).status_code == 303
        got = receiver.wait_for(1)
        assert got[0].json()["event"] == "test"
        listing = owner.get(page).text
        for _ in range(50):  # the delivery is marked after the receiver answered
            if "Delivered" in listing:
                break
            listing = owner.get(page).text
        assert "Delivered" in listing and "HTTP 200" in listing
        delivery_id = re.search(r"/deliveries/(dlv_[0-9a-f]+)/replay", listing)
        assert delivery_id
        replayed = post(owner, f"{page}/deliveries/{delivery_id.group(1)}/replay", page)
        assert replayed.status_code == 303
        again = receiver.wait_for(2)  # the same event, sent again
        assert again[1].json()["id"] == again[0].json()["id"]
        assert post(owner, f"{page}/deliveries/dlv_nope/replay", page).status_code == 404
        bad = post(owner, page, page, url="ftp://example.com/x", event_all="on")
        assert bad.status_code == 400 and 'id="url-error"' in bad.text
        edited = post(owner, page, page, url=receiver.url, custom_events="order, refund")
        assert edited.status_code == 303
        assert "Events: order, refund." in owner.get(page).text
        assert post(owner, page + "/disable", page).status_code == 303
        assert "It gets no events until you enable it" in owner.get(page).text
        assert post(owner, page + "/delete", page).status_code == 303
        assert owner.get(page).status_code == 404


def test_console_token_and_publish(
    people: dict[str, httpx.Client], project: dict[str, str]
) -> None:
    """The console's token is a short-lived connection token for the member subscribed to the
    channel; publishing from the console reaches the engine (JSON answer for the script,
    a page again for a plain form)."""
    owner = people[OWNER]
    base = project["base"]
    token = csrf_of(owner.get(base + "/console").text)
    minted = owner.post(
        base + "/console/token", data={"csrf_token": token, "channel": "public:lobby"}
    )
    assert minted.status_code == 200
    assert minted.json()["expires_in"] == 300 and minted.json()["token"].count(".") == 2
    published = owner.post(
        base + "/console/publish",
        data={"csrf_token": token, "channel": "public:lobby", "message": '{"n": 1}'},
        headers={"Accept": "application/json"},
    )
    assert published.status_code == 200 and published.json()["published"] is True
    plain = owner.post(  # a plain form (no script): back to the console page
        base + "/console/publish",
        data={"csrf_token": token, "channel": "public:lobby", "message": "plain"},
    )
    assert plain.status_code == 303 and plain.headers["location"].endswith("done=published")
    bad = owner.post(
        base + "/console/publish", data={"csrf_token": token, "channel": "", "message": "x"}
    )
    assert bad.status_code == 400 and 'id="publish-channel-error"' in bad.text


def test_console_events_stream_the_projects_lifecycle_to_a_viewer(
    node: ServerProcess, people: dict[str, httpx.Client], project: dict[str, str]
) -> None:
    """The console's app events are Server-Sent Events any member may read (a viewer here):
    ready once the node watches, then a client of the project connecting, with its user."""
    viewer = people[VIEWER]
    base = project["base"]
    with viewer.stream("GET", base + "/console/events", timeout=30) as events:
        assert events.status_code == 200
        assert events.headers["content-type"].startswith("text/event-stream")
        assert events.headers["cache-control"] == "no-store"
        lines = events.iter_lines()
        assert next(line for line in lines if line.startswith("event:")) == "event: ready"
        minted = httpx.post(
            f"{node.base_url}/api/realtime/token",
            headers={"Authorization": f"apikey {project['key']}"},
            json={"userId": "sse-user"},
        )
        minted.raise_for_status()
        ws_url = node.base_url.replace("http", "ws", 1) + "/realtime/connection/websocket"
        with connect(ws_url) as ws:
            ws.send(json.dumps({"id": 1, "connect": {"token": minted.json()["token"]}}))
            assert "connect" in json.loads(ws.recv(timeout=10))
            assert next(line for line in lines if line.startswith("event:")) == "event: lifecycle"
            data = next(lines)
        event = json.loads(data.removeprefix("data:"))
        assert (event["kind"], event["user"], event["transport"]) == (
            "connected",
            "sse-user",
            "websocket",
        )
        # A Pusher client (pusher-js's protocol, the client key) is shown with its transport.
        overview = people[OWNER].get(base).text
        client_key = re.search(r'id="client-key" type="text" readonly value="(xc_[^"]+)"', overview)
        assert client_key
        pusher_url = node.base_url.replace("http", "ws", 1) + f"/app/{client_key.group(1)}"
        with connect(pusher_url + "?protocol=7") as pusher:
            established = json.loads(pusher.recv(timeout=10))
            assert established["event"] == "pusher:connection_established"
            socket_id = json.loads(established["data"])["socket_id"]
            pusher_event = None
            while pusher_event is None or pusher_event["client"] != socket_id:
                assert next(line for line in lines if line.startswith("event:"))
                pusher_event = json.loads(next(lines).removeprefix("data:"))
        assert (pusher_event["kind"], pusher_event["transport"]) == ("connected", "pusher")


def test_operator_sees_api_made_apps_and_owner_deletes_with_typed_name(
    node: ServerProcess, people: dict[str, httpx.Client]
) -> None:
    """The first account (the operator) sees an app made with the admin API and can open it;
    deleting needs the exact name typed."""
    made = node.create_app(name="From the API")
    operator = people[OWNER]  # the first account signed up in this module
    assert "From the API" in operator.get("/dashboard/projects").text
    base = f"/dashboard/projects/{made['app_id']}"
    assert operator.get(base).status_code == 200
    wrong = post(operator, base + "/delete", base + "/settings", confirm_name="from the api")
    assert wrong.status_code == 400 and 'id="confirm_name-error"' in wrong.text
    gone = post(operator, base + "/delete", base + "/settings", confirm_name="From the API")
    assert gone.status_code == 303
    assert operator.get(base).status_code == 404


def test_member_invited_by_email_before_sign_up_gets_the_project(
    node: ServerProcess, people: dict[str, httpx.Client], project: dict[str, str]
) -> None:
    """An email with no account gets a sign-up link; signing up with it binds the membership
    (as a viewer here); the owner can change the role and remove the member."""
    owner = people[OWNER]
    base = project["base"]
    answer = post(
        owner, base + "/members", base + "/members", email="new@example.com", role="viewer"
    )
    assert answer.status_code == 303  # POST/redirect/GET: a reload invites nobody again
    shown = owner.get(answer.headers["location"]).text
    link = re.search(r'value="(http[^"]+invitation=[^"]+)"', shown)
    assert link
    assert "invitation=" not in owner.get(answer.headers["location"]).text  # shown once
    with httpx.Client(base_url=node.base_url) as newcomer:
        invitation = link.group(1).split("invitation=")[1]
        assert sign_up(newcomer, "new@example.com", invitation).status_code == 303
        assert "Shop chat" in newcomer.get("/dashboard/projects").text
        assert newcomer.get(base).status_code == 200
        members = owner.get(base + "/members").text
        row = next(r for r in members.split("<tr>") if "new@example.com" in r)
        assert "Invited" not in row  # bound to the account now
        member_id = re.search(r"/members/(mem_[0-9a-f]+)/role", row)
        assert member_id
        post(owner, f"{base}/members/{member_id.group(1)}/remove", base + "/members")
        assert newcomer.get(base).status_code == 404
    assert sign_in(httpx.Client(base_url=node.base_url), DEV, PASSWORD).status_code == 303


def test_regenerating_needs_confirmation_and_replaces_the_key(
    node: ServerProcess, people: dict[str, httpx.Client]
) -> None:
    """Without the box ticked nothing changes and the page says what to do; with it the old
    key fails at once, the new one (shown once, handed over after a redirect) works."""
    owner = people[OWNER]
    made = post(owner, "/dashboard/projects", "/dashboard/projects", name="Keys")
    first = owner.get(made.headers["location"])
    old = re.search(r'id="server-key" type="text" readonly value="(xs_[^"]+)"', first.text)
    assert old
    base = made.headers["location"].split("?")[0]
    unconfirmed = post(owner, base + "/regenerate", base)
    assert unconfirmed.status_code == 400 and 'id="confirm-error"' in unconfirmed.text
    done = post(owner, base + "/regenerate", base, confirm="on")
    assert done.status_code == 303
    new = re.search(
        r'id="server-key" type="text" readonly value="(xs_[^"]+)"',
        owner.get(done.headers["location"]).text,
    )
    assert new and new.group(1) != old.group(1)

    def broadcast(key: str) -> int:
        return httpx.post(
            f"{node.base_url}/api/broadcast",
            headers={"X-App-API-Key": key},
            json={"room": "news", "event": "e", "data": {}},
        ).status_code

    assert broadcast(old.group(1)) == 401
    assert broadcast(new.group(1)) == 200


def test_analytics_endpoint_counts_as_the_api_does(
    node: ServerProcess, people: dict[str, httpx.Client], project: dict[str, str]
) -> None:
    """The dashboard's JSON for the charts has the same totals as `GET /api/analytics` for
    each period, and a chart geometry per series; an unknown period is refused."""
    owner = people[OWNER]
    for period in ("1h", "24h", "7d", "30d"):
        mine = owner.get(f"{project['base']}/analytics.json", params={"period": period}).json()
        api = httpx.get(
            f"{node.base_url}/api/analytics",
            params={"period": period, "app_id": project["app_id"]},
            headers=node.admin_headers(),
        ).json()
        assert mine["totals"]["publications"] == api["metrics"]["events"]["total"] > 0
        assert mine["totals"]["connections"] == api["metrics"]["connections"]["total"]
        assert mine["totals"]["users"] == api["metrics"]["users"]["total"]
        points = mine["charts"]["publications"]["line"].split()
        # One bucket per series point (a minute may turn between the two requests).
        assert abs(len(points) - len(api["series"])) <= 1
    refused = owner.get(f"{project['base']}/analytics.json", params={"period": "2y"})
    assert refused.status_code == 400


def test_proxies_tab_saves_what_the_engine_uses_and_hides_header_values_from_viewers(
    people: dict[str, httpx.Client], project: dict[str, str], node: ServerProcess
) -> None:
    """A developer names a proxy (bad values refused beside their field), chooses it as the
    connect proxy, an RPC namespace's and a namespace's subscribe proxy; the engine then asks
    that backend with the static header; a viewer reads the tab without any header value or
    endpoint query and may change nothing."""
    dev, viewer = people[DEV], people[VIEWER]
    base = project["base"]
    tab = base + "/proxies"
    fields = {
        "name": "auth",
        "endpoint": "ftp://example.com/proxy",
        "timeout": "2s",
        "http_headers": "Authorization, Cookie",
        "static_headers": "X-Api-Key: topsecret",
    }
    bad = post(dev, tab, tab, **fields)
    assert bad.status_code == 400
    assert 'id="proxy-endpoint-error"' in bad.text
    assert "Must be an http:// or https:// URL." in bad.text
    assert 'value="ftp://example.com/proxy"' in bad.text  # kept for fixing
    slow = post(dev, tab, tab, **{**fields, "endpoint": "http://127.0.0.1/", "timeout": "1h"})
    assert slow.status_code == 400 and 'id="proxy-timeout-error"' in slow.text
    with Receiver(default=500).running() as backend:
        url = backend.url + "?token=qs-secret"
        saved = post(dev, tab, tab, **{**fields, "endpoint": url})
        assert saved.status_code == 303, saved.text
        client = post(dev, tab + "/client", tab, connect="auth", refresh="", send="")
        assert client.status_code == 303
        missing = post(dev, tab + "/rpc", tab, rpc_name="calc", rpc_proxy="nope")
        assert missing.status_code == 400 and 'id="rpc_proxy-error"' in missing.text
        assert post(dev, tab + "/rpc", tab, rpc_name="calc", rpc_proxy="auth").status_code == 303
        ns_bad = post(
            dev,
            base + "/namespaces",
            base + "/settings",
            namespace="px",
            **{"subscribe_proxy": "nope"},
        )
        assert ns_bad.status_code == 400 and 'id="ns-subscribe_proxy-error"' in ns_bad.text
        ns = post(
            dev, base + "/namespaces", base + "/settings", namespace="px", subscribe_proxy="auth"
        )
        assert ns.status_code == 303
        assert "subscribe proxy auth" in dev.get(base + "/settings").text
        stored = httpx.get(
            f"{node.base_url}/api/applications",
            params={"app_id": project["app_id"]},
            headers=node.admin_headers(),
        ).json()["application"]
        proxies = stored["proxies"]
        assert proxies["proxies"][0]["http"]["static_headers"] == {"X-Api-Key": "topsecret"}
        connect_proxy = proxies["client"]["proxy"]["connect"]
        assert connect_proxy["enabled"] and connect_proxy["proxy_name"] == "auth"
        assert proxies["rpc"]["namespaces"][0]["proxy_name"] == "auth"
        # The real path: a client without a token makes the engine ask the backend.
        with connect(f"{node.ws_url}?key={stored['client_api_key']}") as ws:
            ws.send(json.dumps({"id": 1, "connect": {}}))
            (seen,) = backend.wait_for(1)
            assert seen.headers["X-Api-Key"] == "topsecret"
        edit = dev.get(tab + "?edit=auth").text
        assert "X-Api-Key: topsecret" in edit and 'value="2s"' in edit
        shown = viewer.get(tab)
        assert shown.status_code == 200
        assert "X-Api-Key" in shown.text  # the name, not its value
        assert "topsecret" not in shown.text and "qs-secret" not in shown.text
        assert "Save proxy" not in shown.text
        assert post(viewer, tab + "/client", tab, connect="").status_code == 403
        # A proxy still chosen somewhere cannot be deleted: said, not broken.
        in_use = post(dev, tab + "/delete", tab, name="auth")
        assert in_use.status_code == 400 and "still in use" in in_use.text


def pusher_client_event_answer(node: ServerProcess, client_key: str) -> str:
    """What a Pusher connection hears when it sends a client event on a private channel it has
    not joined: refused as disabled, or (enabled) as not subscribed."""
    with connect(
        f"ws://127.0.0.1:{node.port}/app/{client_key}?protocol=7&client=js&version=8.4.0"
    ) as ws:
        assert json.loads(ws.recv(timeout=10))["event"] == "pusher:connection_established"
        ws.send(json.dumps({"event": "client-typing", "channel": "private-room", "data": {}}))
        answer = json.loads(ws.recv(timeout=10))
        assert answer["event"] == "pusher:error"
        return str(answer["data"]["message"])


def test_pusher_client_events_switch_and_pusher_js_snippet(
    people: dict[str, httpx.Client], project: dict[str, str], node: ServerProcess
) -> None:
    """The Settings switch turns Pusher client events on for the app's Pusher connections; the
    overview shows owners and developers a pusher-js snippet with the host and client key,
    and viewers no snippet."""
    dev, viewer = people[DEV], people[VIEWER]
    base = project["base"]
    stored = httpx.get(
        f"{node.base_url}/api/applications",
        params={"app_id": project["app_id"]},
        headers=node.admin_headers(),
    ).json()["application"]
    key = stored["client_api_key"]
    settings = {"name": "Shop chat", "rate_limit": "500", "enabled": "on"}
    assert post(dev, base + "/settings", base + "/settings", **settings).status_code == 303
    assert "not enabled" in pusher_client_event_answer(node, key)
    on = post(dev, base + "/settings", base + "/settings", **settings, pusher_client_events="on")
    assert on.status_code == 303
    page = dev.get(base + "/settings").text
    assert re.search(r'id="pusher_client_events"[^>]*checked', page)
    assert "Not subscribed to private-room" in pusher_client_event_answer(node, key)
    overview = dev.get(base).text
    host = node.base_url.split("//", 1)[1].split(":")[0]
    assert f'new Pusher("{key}"' in overview and f'wsHost: "{host}"' in overview
    assert f"wsPort: {node.port}" in overview
    assert "Client events (<code>client-…</code>) are allowed" in overview
    seen = viewer.get(base).text
    assert "Connect with pusher-js" not in seen and key not in seen
    assert post(dev, base + "/settings", base + "/settings", **settings).status_code == 303


def test_an_open_console_stream_ends_when_its_session_does(
    node: ServerProcess, project: dict[str, str]
) -> None:
    """Signing out (here from the same browser; any node, any way a session ends) ends an
    open app-events stream at its next keep-alive: events stop reaching a signed-out person."""
    with httpx.Client(base_url=node.base_url) as http:
        assert sign_in(http, VIEWER).status_code == 303
        token = csrf_of(http.get(project["base"] + "/console").text)
        with http.stream("GET", project["base"] + "/console/events", timeout=60) as events:
            lines = events.iter_lines()
            assert next(line for line in lines if line.startswith("event:")) == "event: ready"
            with httpx.Client(base_url=node.base_url, cookies=http.cookies) as other:
                assert other.post("/dashboard/logout", data={"csrf_token": token}).is_redirect
            rest = list(lines)  # returns once the server ended the stream
            assert not [line for line in rest if line.startswith("event:")], rest


def test_an_open_console_stream_ends_as_its_node_stops(tmp_path: Path) -> None:
    """A browser's open app-events stream does not hold the node's shutdown for uvicorn's
    whole grace period: the stream is ended (the browser reconnects to another node)."""
    import signal

    with (
        running_server(tmp_path / "stopping") as server,
        httpx.Client(base_url=server.base_url) as http,
    ):
        assert sign_up(http, "first@example.com").status_code == 303
        made = post(http, "/dashboard/projects", "/dashboard/projects", name="Stopping")
        base = made.headers["location"].split("?")[0]
        with http.stream("GET", base + "/console/events", timeout=30) as events:
            lines = events.iter_lines()
            assert next(line for line in lines if line.startswith("event:")) == "event: ready"
            server.process.send_signal(signal.SIGTERM)
            rest = list(lines)  # returns: the stream ends
            assert not [line for line in rest if line.startswith("event:")], rest
        server.process.wait(timeout=20)
        assert "graceful shutdown exceeded" not in server.log()
