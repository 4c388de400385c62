"""The dashboard (SPEC §7): server-rendered pages for people, mounted at /dashboard.

It calls the account service and the application store's contract, never SQL or the engine's
internals. Its templates and static files ship inside the package; nothing loads from another
origin.
"""

from xshathra.dashboard.app import create_dashboard

__all__ = ["create_dashboard"]
