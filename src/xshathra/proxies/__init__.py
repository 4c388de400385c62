"""Backend proxies (SPEC §9): the HTTP caller that implements the engine's `ProxyCaller`."""
