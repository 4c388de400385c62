"""centrifuge-js's `sse` and `http_stream` transports in Debian's Chromium, on a page of another
origin than the server: the browser's own EventSource and fetch, its CORS checks (preflight
of the emulation POST included) and the app's `allowed_domain`.

The page is served by a plain HTTP server at `http://localhost:<port>`; the node is
`http://127.0.0.1:<its port>`, another origin for the browser (both on loopback, so Chromium's
local-network checks let the page reach it, as a page and a server on one network would).
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.test_socket_auth_page import ARGS, CHROMIUM
from tests.support.clients import engine_api, realtime_token
from tests.support.server import ServerProcess, running_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CENTRIFUGE_JS = (
    Path(__file__).resolve().parents[1]
    / "js"
    / "node_modules"
    / "centrifuge"
    / "dist"
    / "centrifuge.js"
)

pytestmark = pytest.mark.skipif(
    not CENTRIFUGE_JS.exists(), reason="the npm packages are missing (make test installs them)"
)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("browser-sse")) as proc:
        yield proc


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(origin, folder) of a static site of its own: pages are written to the folder."""
    folder = tmp_path_factory.mktemp("site")
    (folder / "centrifuge.js").write_bytes(CENTRIFUGE_JS.read_bytes())
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=folder))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{httpd.server_address[1]}", folder
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield instance
        finally:
            instance.close()


def open_page(
    browser: Browser, site: tuple[str, Path], node: ServerProcess, transport: str, token: str
) -> Page:
    """A page of the site whose client connects to the node over `transport`."""
    config = {
        "endpoint": f"{node.base_url}/realtime/connection/{transport}",
        "transport": transport,
        "emulation": f"{node.base_url}/realtime/emulation",
        "token": token,
    }
    html = f"""<!doctype html><html><body><script src="/centrifuge.js"></script><script>
const cfg = {json.dumps(config)};
window.events = [];
const client = new Centrifuge([{{transport: cfg.transport, endpoint: cfg.endpoint}}],
  {{emulationEndpoint: cfg.emulation, token: cfg.token}});
client.on("connected", (ctx) => events.push({{kind: "connected", transport: ctx.transport}}));
client.on("disconnected", (ctx) => events.push({{kind: "disconnected", code: ctx.code}}));
const sub = client.newSubscription("public:browser");
sub.on("subscribed", () => events.push({{kind: "subscribed"}}));
sub.on("publication", (ctx) => events.push({{kind: "publication", data: ctx.data}}));
window.publish = (data) => sub.publish(data).then(() => events.push({{kind: "published"}}),
  (e) => events.push({{kind: "publish_error", code: e.code}}));
sub.subscribe();
client.connect();
</script></body></html>"""

    origin, folder = site
    name = f"{transport}-{token[-8:]}.html"
    (folder / name).write_text(html)
    page = browser.new_context().new_page()
    page.goto(f"{origin}/{name}")
    return page


def wait_event(page: Page, kind: str, timeout: float = 15_000) -> Any:
    page.wait_for_function(
        "(kind) => window.events.some((e) => e.kind === kind)", arg=kind, timeout=timeout
    )
    return next(e for e in page.evaluate("window.events") if e["kind"] == kind)


@pytest.mark.parametrize("transport", ["sse", "http_stream"])
def test_a_page_of_an_allowed_origin_uses_the_stream_transports(
    browser: Browser, site: tuple[str, Path], node: ServerProcess, transport: str
) -> None:
    app = node.create_app(name=f"browser-{transport}", allowed_domain="localhost")
    page = open_page(browser, site, node, transport, realtime_token(node, app, "browser-user"))
    try:
        assert wait_event(page, "connected")["transport"] == transport
        wait_event(page, "subscribed")  # the subscribe went through the emulation endpoint
        engine_api(node, app, "publish", {"channel": "public:browser", "data": {"n": 1}})
        assert wait_event(page, "publication")["data"] == {"n": 1}
    finally:
        page.context.close()


def test_a_page_of_another_origin_is_refused(
    browser: Browser, site: tuple[str, Path], node: ServerProcess
) -> None:
    app = node.create_app(name="browser-refused", allowed_domain="example.com")
    page = open_page(browser, site, node, "sse", realtime_token(node, app, "browser-user"))
    try:
        assert wait_event(page, "disconnected")["code"] == 3507
        assert not [e for e in page.evaluate("window.events") if e["kind"] == "connected"]
    finally:
        page.context.close()
