"""The project's Proxies tab (SPEC §9): named proxies, the client's connect/refresh/send
proxies and RPC namespaces. Per-namespace subscribe/publish/sub_refresh proxies are chosen in
the namespaces form of Settings.

Each form changes one part of the app's `proxies` section and hands the whole section to the
application service, which validates it; its refusal names a field path
(`proxies.proxies[0].endpoint`), shown beside the form field it comes from. Static header
values may be credentials: only members who see secrets get them (and the edit forms);
a viewer sees header names, and endpoints without user info or query.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from xshathra.tenancy.proxies import to_builtins
from xshathra.tenancy.service import ServiceError

if TYPE_CHECKING:
    from xshathra.dashboard.app import Signed
    from xshathra.dashboard.projects import Project, ProjectPages

CLIENT_KINDS = ("connect", "refresh", "send")
OWN_ENDPOINT = "__own__"  # a client proxy with its own endpoint, set through the API: kept
_PROXY_FIELD = re.compile(r"^proxies\.proxies\[\d+\]\.(name|endpoint|timeout|http_headers|http)")
_CLIENT_FIELD = re.compile(r"^proxies\.client\.proxy\.(connect|refresh|send)")
_RPC_FIELD = re.compile(r"^proxies\.rpc\.namespaces\[\d+\]\.(name|proxy_name)")
_RPC_FORM = {"name": "rpc_name", "proxy_name": "rpc_proxy"}


def public_endpoint(url: str) -> str:
    """An endpoint as a viewer may see it: no user info, query or fragment (credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.replace("\n", ",").split(",") if n.strip()]


def _static(text: str) -> dict[str, str] | str:
    """`Name: value` lines as a dict, or the line that has no colon (to say so)."""
    headers: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon:
            return line.strip()
        headers[name.strip()] = value.strip()
    return headers


def _beside(exc: ServiceError, pattern: re.Pattern[str], rename: dict[str, str]) -> dict[str, str]:
    """The service's refusal as {form field: message}, or {"alert": message} when it is about
    something this form does not show."""
    path = exc.field or ""
    found = pattern.match(path)
    if found is None:
        return {"alert": exc.message}
    rest = exc.message[len(path) :].lstrip(": ").strip() if exc.message.startswith(path) else ""
    text = (rest[:1].upper() + rest[1:]) if rest else exc.message
    return {rename.get(found.group(1), found.group(1)): text.rstrip(".") + "."}


class ProxyPages:
    def __init__(self, pages: ProjectPages) -> None:
        self.pages = pages

    def routes(self) -> list[Route]:
        p = "/projects/{app_id}/proxies"
        return [
            Route(p, self.page, methods=["GET", "POST"]),
            Route(p + "/delete", self.delete, methods=["POST"]),
            Route(p + "/client", self.client, methods=["POST"]),
            Route(p + "/rpc", self.rpc, methods=["POST"]),
            Route(p + "/rpc/delete", self.rpc_delete, methods=["POST"]),
        ]

    def _render(
        self, signed: Signed, project: Project, *, status: int = 200, **ctx: Any
    ) -> Response:
        config = project.app.proxies
        secrets = project.role.sees_secrets
        proxies = [
            {
                "name": p.name,
                "endpoint": p.endpoint if secrets else public_endpoint(p.endpoint),
                "timeout": p.timeout,
                "http_headers": p.http_headers,
                "static_names": list(p.http.static_headers),
            }
            for p in config.proxies
        ]
        client = {}
        for kind in CLIENT_KINDS:
            c = getattr(config.client.proxy, kind)
            choice = "" if not c.enabled else (c.proxy_name or OWN_ENDPOINT)
            client[kind] = {"choice": choice, "endpoint": c.endpoint}
        ctx.setdefault("errors", {})
        ctx.setdefault("values", {"timeout": "1s"})
        ctx.setdefault("client_values", {k: v["choice"] for k, v in client.items()})
        ctx.setdefault("client_errors", {})
        ctx.setdefault("rpc_values", {})
        ctx.setdefault("rpc_errors", {})
        return self.pages._render(
            "project_proxies.html",
            signed,
            project,
            status=status,
            tab="proxies",
            proxies=proxies,
            proxy_names=[p.name for p in config.proxies],
            client=client,
            client_kinds=CLIENT_KINDS,
            own_endpoint=OWN_ENDPOINT,
            rpc=config.rpc.namespaces,
            **ctx,
        )

    async def _save(self, signed: Signed, project: Project, raw: dict[str, Any]) -> None:
        await self.pages.service.update_project(
            project.app, {"proxies": raw}, operator=signed[1].operator
        )

    async def page(self, request: Request) -> Response:
        if request.method == "GET":
            opened = await self.pages._open(request)
            if isinstance(opened, Response):
                return opened
            signed, project = opened
            ctx: dict[str, Any] = {"done": self.pages._done(request)}
            # ?edit=NAME fills the form with that proxy (a link, so it works without script).
            edit = project.app.proxies.named(request.query_params.get("edit", ""))
            if edit is not None and project.role.can_change:
                ctx["values"] = {
                    "name": edit.name,
                    "original": edit.name,
                    "endpoint": edit.endpoint,
                    "timeout": edit.timeout,
                    "http_headers": ", ".join(edit.http_headers),
                    "static_headers": "\n".join(
                        f"{k}: {v}" for k, v in edit.http.static_headers.items()
                    ),
                }
            return self._render(signed, project, **ctx)
        changed = await self.pages._change(request)
        if isinstance(changed, Response):
            return changed
        signed, project, form = changed
        values = {
            k: form.get(k, "")
            for k in ("name", "original", "endpoint", "timeout", "http_headers", "static_headers")
        }
        name = values["name"].strip()
        errors: dict[str, str] = {}
        static = _static(values["static_headers"])
        if isinstance(static, str):
            errors["static_headers"] = (
                f"Write each header as Name: value on its own line ('{static[:40]}' has no colon)."
            )
        if not name:
            errors["name"] = "Enter the proxy's name, like default."
        if not values["endpoint"].strip():
            errors["endpoint"] = "Enter the backend's URL, like https://api.example.com/proxy."
        if not errors:
            raw = to_builtins(project.app.proxies)
            entry: dict[str, Any] = {
                "name": name,
                "endpoint": values["endpoint"].strip(),
                "timeout": values["timeout"].strip() or "1s",
                "http_headers": _names(values["http_headers"]),
                "http": {"static_headers": static},
            }
            listed: list[dict[str, Any]] = list(raw.get("proxies", []))  # type: ignore[call-overload]
            original = values["original"] or name
            at = next((i for i, p in enumerate(listed) if p["name"] == original), None)
            if at is None:
                listed.append(entry)
            else:
                listed[at] = entry
            raw["proxies"] = listed
            try:
                await self._save(signed, project, raw)
            except ServiceError as exc:
                errors = _beside(exc, _PROXY_FIELD, {"http": "static_headers"})
            else:
                return self.pages._back(project, "proxies", "proxy")
        alert = errors.pop("alert", None)
        return self._render(signed, project, status=400, values=values, errors=errors, alert=alert)

    async def delete(self, request: Request) -> Response:
        changed = await self.pages._change(request)
        if isinstance(changed, Response):
            return changed
        signed, project, form = changed
        raw = to_builtins(project.app.proxies)
        proxies: list[dict[str, Any]] = list(raw.get("proxies", []))  # type: ignore[call-overload]
        raw["proxies"] = [p for p in proxies if p["name"] != form.get("name")]
        try:
            await self._save(signed, project, raw)
        except ServiceError as exc:
            return self._render(
                signed,
                project,
                status=400,
                alert=f"{form.get('name', '')} is still in use: {exc.message}. "
                "Choose another proxy there first.",
            )
        return self.pages._back(project, "proxies", "proxy_deleted")

    async def client(self, request: Request) -> Response:
        changed = await self.pages._change(request)
        if isinstance(changed, Response):
            return changed
        signed, project, form = changed
        raw = to_builtins(project.app.proxies)
        section: dict[str, Any] = dict(raw.get("client", {}).get("proxy", {}))  # type: ignore[attr-defined]
        values = {k: form.get(k, "") for k in CLIENT_KINDS}
        for kind in CLIENT_KINDS:
            choice = values[kind]
            if choice == OWN_ENDPOINT:
                continue  # its own endpoint, set with the API: left as it is
            if choice:
                section[kind] = {"enabled": True, "proxy_name": choice}
            else:
                section.pop(kind, None)
        raw["client"] = {"proxy": section}
        try:
            await self._save(signed, project, raw)
        except ServiceError as exc:
            errors = _beside(exc, _CLIENT_FIELD, {})
            alert = errors.pop("alert", None)
            return self._render(
                signed,
                project,
                status=400,
                client_values=values,
                client_errors=errors,
                alert=alert,
            )
        return self.pages._back(project, "proxies", "client_proxies")

    async def rpc(self, request: Request) -> Response:
        changed = await self.pages._change(request)
        if isinstance(changed, Response):
            return changed
        signed, project, form = changed
        values = {"rpc_name": form.get("rpc_name", "").strip(), "rpc_proxy": form.get("rpc_proxy")}
        raw = to_builtins(project.app.proxies)
        rpc: dict[str, Any] = dict(raw.get("rpc", {}))  # type: ignore[call-overload]
        spaces = [n for n in rpc.get("namespaces", []) if n.get("name", "") != values["rpc_name"]]
        entry: dict[str, Any] = {"name": values["rpc_name"]}
        if values["rpc_proxy"]:
            entry.update(proxy_enabled=True, proxy_name=values["rpc_proxy"])
        spaces.append(entry)
        rpc["namespaces"] = spaces
        raw["rpc"] = rpc
        try:
            await self._save(signed, project, raw)
        except ServiceError as exc:
            errors = _beside(exc, _RPC_FIELD, _RPC_FORM)
            alert = errors.pop("alert", None)
            return self._render(
                signed, project, status=400, rpc_values=values, rpc_errors=errors, alert=alert
            )
        return self.pages._back(project, "proxies", "rpc")

    async def rpc_delete(self, request: Request) -> Response:
        changed = await self.pages._change(request)
        if isinstance(changed, Response):
            return changed
        signed, project, form = changed
        raw = to_builtins(project.app.proxies)
        rpc: dict[str, Any] = dict(raw.get("rpc", {}))  # type: ignore[call-overload]
        rpc["namespaces"] = [
            n for n in rpc.get("namespaces", []) if n.get("name", "") != form.get("rpc_name")
        ]
        raw["rpc"] = rpc
        await self._save(signed, project, raw)
        return self.pages._back(project, "proxies", "rpc_deleted")
