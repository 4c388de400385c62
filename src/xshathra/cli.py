"""The `xshathra` command: run a node, and manage applications from the shell.

`--json` prints exactly the JSON the HTTP API answers (the same view functions serve both, and
the same application service checks and makes the changes); errors go to stderr with exit
code 1, never as a traceback or with a secret.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click
from pydantic import ValidationError

from xshathra.settings import Settings

if TYPE_CHECKING:
    from xshathra.accounts.models import Account
    from xshathra.accounts.service import AccountService
    from xshathra.storage.database import Database
    from xshathra.tenancy.service import ApplicationService

S = TypeVar("S")
T = TypeVar("T")


def _settings(**overrides: Any) -> Settings:
    """Settings from the environment, `.env` and flags; a bad value is a one-line error that
    names the variable (never its value: it may be a secret)."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"XSHATHRA_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise click.ClickException(f"invalid configuration: {problems}") from None


def _with_database(
    build: Callable[[Database, Settings], S], work: Callable[[S], Awaitable[T]]
) -> T:
    """Open the configured database, run `work` on the service `build` makes over it, close
    it; errors become clean messages."""
    settings = _settings()

    async def main() -> T:
        from xshathra.storage.database import open_database

        db = await open_database(settings.database_url)
        try:
            return await work(build(db, settings))
        finally:
            await db.close()

    try:
        return asyncio.run(main())
    except click.ClickException:
        raise
    except (ValueError, RuntimeError) as exc:
        # Our storage layer's own messages, with any password in a URL already masked.
        raise click.ClickException(str(exc)) from None
    except Exception as exc:
        # A driver's message may quote SQL parameters (secrets): name the error type only.
        raise click.ClickException(f"database error ({type(exc).__name__})") from None


def _application_service(db: Database, settings: Settings) -> ApplicationService:
    """The application service over `db`. No node runs here, so no node is told of changes
    (one that runs reads the database)."""
    from xshathra.tenancy.service import ApplicationService, NoNotifier

    return ApplicationService(
        db.apps,
        db.webhooks,
        db.deliveries,
        NoNotifier(),
        default_rate_limit=settings.default_app_rate_limit,
        key_rate_limit_ceiling=settings.app_rate_limit_ceiling,
        webhook_max_per_app=settings.webhook_max_per_app,
        webhook_allow_private=settings.webhook_allow_private,
    )


def _account_service(db: Database, settings: Settings) -> AccountService:
    from xshathra.accounts.service import AccountService

    return AccountService(db.accounts)


def _run(work: Callable[[ApplicationService], Awaitable[T]]) -> T:
    """Run `work` with the application service over the configured database."""
    return _with_database(_application_service, work)


def _run_accounts(work: Callable[[AccountService], Awaitable[T]]) -> T:
    """Run `work` with the dashboard's account service over the configured database."""
    return _with_database(_account_service, work)


def _print_json(body: dict[str, Any]) -> None:
    click.echo(json.dumps(body, indent=2))


@click.group()
@click.version_option(package_name="xshathra")
def main() -> None:
    """Xshathra: a multi-tenant realtime messaging server."""


@main.command()
@click.option("--host", default=None, help="Interface to listen on (default 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port to listen on (default 3001).")
@click.option(
    "--workers",
    default=None,
    help="Processes serving the port: a number or 'auto' (one per core); default 1 "
    "(XSHATHRA_WORKERS). More than one needs XSHATHRA_BROKER_URL redis:// or nats://.",
)
# Set by the supervisor on the processes it starts: never by hand.
@click.option("--worker-index", default=None, type=int, hidden=True)
def serve(
    host: str | None, port: int | None, workers: str | None, worker_index: int | None
) -> None:
    """Run a node: HTTP API, engine and test page on one port (several processes with
    --workers)."""
    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if workers is not None:
        overrides["workers"] = workers
    settings = _settings(**overrides)
    if worker_index is not None:
        from xshathra.workers import run_worker

        run_worker(settings, worker_index)
        return
    count = settings.worker_count()
    if count == 1:
        from xshathra.server import serve as run_server

        run_server(settings)
        return
    from xshathra.workers import supervise

    raise SystemExit(supervise(settings, count))


@main.group()
def apps() -> None:
    """Manage applications (tenants)."""


@apps.command("create")
@click.argument("name")
@click.option("--app-id", default=None, help="Slug [A-Za-z0-9_-]{1,64}; generated if absent.")
@click.option("--allowed-domain", default=None)
@click.option("--rate-limit", default=None, type=click.IntRange(1, 1_000_000))
@click.option("--json", "as_json", is_flag=True, help="Print the HTTP API's JSON.")
def apps_create(
    name: str, app_id: str | None, allowed_domain: str | None, rate_limit: int | None, as_json: bool
) -> None:
    """Create an application; prints its keys once."""
    from xshathra.api.views import application_view
    from xshathra.tenancy.apps import AppExistsError, AppIdRetiredError, Application, NewAppKeys
    from xshathra.tenancy.service import ServiceError

    async def work(service: ApplicationService) -> tuple[Application, NewAppKeys]:
        try:  # the checks of the HTTP API too: the same service makes both changes
            return await service.create_application(
                name=name, app_id=app_id, allowed_domain=allowed_domain, rate_limit=rate_limit
            )
        except ServiceError as exc:
            raise click.ClickException(exc.message) from None
        except AppIdRetiredError:
            raise click.ClickException(
                f"app_id '{app_id}' was used by a deleted application and cannot be reused"
            ) from None
        except AppExistsError:
            raise click.ClickException(f"an application with app_id '{app_id}' exists") from None

    app, keys = _run(work)
    view = application_view(app, api_key=keys.api_key)
    if as_json:
        _print_json({"success": True, "application": view})
        return
    click.echo(f"Created application {app.app_id} ({app.name})")
    for field in ("app_id", "api_key", "app_secret", "client_api_key"):
        click.echo(f"  {field:16} {view[field]}")
    click.echo("The api_key is shown only now: store it.")


@apps.command("list")
@click.option("--json", "as_json", is_flag=True)
def apps_list(as_json: bool) -> None:
    """List applications."""
    from xshathra.api.views import application_view

    found = _run(lambda service: service.list_applications())
    views = [application_view(a) for a in found]
    if as_json:
        _print_json({"success": True, "applications": views})
        return
    if not views:
        click.echo("No applications.")
        return
    click.echo(f"{'APP ID':<32} {'NAME':<28} {'STATUS':<8} RATE/MIN")
    for v in views:
        status = "enabled" if v["status"] else "disabled"
        click.echo(f"{v['app_id']:<32} {v['name'][:28]:<28} {status:<8} {v['rate_limit']}")


@apps.command("show")
@click.argument("app_id")
@click.option("--json", "as_json", is_flag=True)
def apps_show(app_id: str, as_json: bool) -> None:
    """Show one application."""
    from xshathra.api.views import application_view

    app = _run(lambda service: service.get_application(app_id))
    if app is None:
        raise click.ClickException(f"application '{app_id}' not found")
    view = application_view(app)
    if as_json:
        _print_json({"success": True, "application": view})
        return
    for key, value in view.items():
        click.echo(f"{key:16} {json.dumps(value) if isinstance(value, dict) else value}")


@apps.command("delete")
@click.argument("app_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True)
def apps_delete(app_id: str, yes: bool, as_json: bool) -> None:
    """Delete an application and everything it owns; its app_id is never given out again."""
    if not yes:
        if not sys.stdin.isatty():
            raise click.ClickException("no terminal to confirm on: pass --yes to delete")
        click.confirm(f"Delete application '{app_id}' and all its data?", abort=True)
    from xshathra.tenancy.service import NotFound

    async def work(service: ApplicationService) -> None:
        try:
            await service.delete_application(app_id)
        except NotFound:
            raise click.ClickException(f"application '{app_id}' not found") from None

    _run(work)
    if as_json:
        _print_json({"success": True})
    else:
        click.echo(f"Deleted application {app_id}")


@main.group()
def users() -> None:
    """Manage dashboard accounts."""


def _read_password(from_stdin: bool) -> str:
    """From one line of stdin, or a hidden prompt asked twice; never from an argument (it
    would show in the process list and the shell's history)."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise click.ClickException("no password on standard input")
        return password
    if not sys.stdin.isatty():
        raise click.ClickException("no terminal to ask the password on: use --password-stdin")
    prompted: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return prompted


@users.command("create")
@click.argument("email")
@click.option("--operator", is_flag=True, help="The account runs the server (sees everything).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def users_create(email: str, operator: bool, password_stdin: bool) -> None:
    """Create a dashboard account, whatever XSHATHRA_SIGNUP says."""
    from xshathra.accounts.service import FieldError

    password = _read_password(password_stdin)

    async def work(service: AccountService) -> Account:
        try:
            return await service.create_account(email, password, operator=operator)
        except FieldError as exc:
            raise click.ClickException(f"{exc.field}: {exc.message}") from None

    account = _run_accounts(work)
    role = "operator" if account.operator else "member"
    click.echo(f"Created account {account.email} ({role})")


@users.command("reset-password")
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def users_reset_password(email: str, password_stdin: bool) -> None:
    """Set a new password for an account and sign it out everywhere."""
    from xshathra.accounts.service import FieldError

    password = _read_password(password_stdin)

    async def work(service: AccountService) -> int:
        try:
            ended: int = await service.reset_password(email, password)
        except FieldError as exc:
            raise click.ClickException(f"{exc.field}: {exc.message}") from None
        return ended

    ended = _run_accounts(work)
    click.echo(f"Password reset for {email.strip().lower()}; {ended} session(s) ended")
