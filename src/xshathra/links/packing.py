"""Client infos as the Redis and NATS backends store and send them: a msgpack array."""

from __future__ import annotations

from typing import overload

import msgspec

from xshathra.model import ClientInfoData

Info = tuple[str, str, bytes, bytes]

encode_info = msgspec.msgpack.Encoder().encode
decode_info = msgspec.msgpack.Decoder(Info).decode


@overload
def pack_info(info: ClientInfoData) -> Info: ...
@overload
def pack_info(info: None) -> None: ...
@overload
def pack_info(info: ClientInfoData | None) -> Info | None: ...
def pack_info(info: ClientInfoData | None) -> Info | None:
    return None if info is None else (info.user, info.client, info.conn_info, info.chan_info)


@overload
def unpack_info(info: Info) -> ClientInfoData: ...
@overload
def unpack_info(info: None) -> None: ...
@overload
def unpack_info(info: Info | None) -> ClientInfoData | None: ...
def unpack_info(info: Info | None) -> ClientInfoData | None:
    return None if info is None else ClientInfoData(*info)
