"""The objects every HTTP surface needs, built once by the composition root (`server.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xshathra.accounts.service import AccountService
    from xshathra.analytics import AnalyticsReader
    from xshathra.api.executor import Executor
    from xshathra.api.ratelimit import RateLimiter
    from xshathra.pusher.channels import PusherChannels
    from xshathra.settings import Settings
    from xshathra.storage.database import Database
    from xshathra.tenancy.appcache import AppKeyCache
    from xshathra.tenancy.service import ApplicationService
    from xshathra.tenancy.tokens import TokenService


@dataclass(slots=True)
class ServerContext:
    settings: Settings
    db: Database
    tokens: TokenService
    admin_key_hash: str  # SHA-256 of the admin key (tenancy.apps.hash_key); the key is not kept
    executor: Executor
    analytics: AnalyticsReader
    limiter: RateLimiter
    app_keys: AppKeyCache  # API key -> app, for authenticating requests
    apps: ApplicationService  # every change to applications and webhooks
    accounts: AccountService  # dashboard accounts and sessions
    pusher: PusherChannels  # what the Pusher HTTP API does to channels
