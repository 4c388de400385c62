"""What the engine is configured with: a frozen value built by the composition root
(`server.py`) from the operator's settings. The engine never reads settings itself; a field
belongs here only if the engine or a transport serving it reads it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineOptions:
    """Limits and timings of one node. The defaults are the settings' defaults (a unit test
    keeps them equal), so a node built in a test or a tool behaves as a served one."""

    node_name: str = ""  # shown by the server API's `info`; the node id when empty
    # Limits (SPEC §6)
    max_message_size: int = 65536  # one publication's data, and one WebSocket message
    max_channels_per_connection: int = 128
    max_connections_per_app: int = 10_000
    client_command_rate: float = 100.0  # commands per second, sustained
    client_command_burst: int = 200
    client_queue_max_bytes: int = 4_194_304  # past it a client is a slow consumer (3008)
    max_history_reply_bytes: int = 2 * 1024 * 1024  # one history reply or one recovery
    # Timings, in seconds
    ping_interval: int = 25
    presence_ttl: int = 60  # presence entries are refreshed at a third of it
    connect_timeout: float = 10.0  # for the first (connect) command
    expired_close_delay: float = 25.0  # grace for a token refresh before the close
    # Between heartbeats (liveness, info, cluster-wide quotas); a node is gone after three.
    node_stats_interval: float = 1.0
    cluster_query_timeout: float = 1.0  # how long channels/connections wait for other nodes
    access_rules_ttl: float = 30.0  # an app's cached access rules are read again after it
    pusher_signin_timeout: float = 30.0  # Pusher apps that require sign-in: time to sign in
    # Positioned subscriptions: how often each channel's stream top is compared with what was
    # delivered (Centrifugo's client_channel_position_check_delay).
    position_check_interval: float = 40.0
    # Read by the WebSocket transport
    max_header_bytes: int = 65_536
    preconnect_max_bytes: int = 131_072
    # permessage-deflate (RFC 7692), offered to clients only when on; messages shorter than
    # the minimum go out uncompressed.
    websocket_compression: bool = False
    websocket_compression_level: int = 1
    websocket_compression_min_size: int = 128
