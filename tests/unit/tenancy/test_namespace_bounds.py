"""NamespaceOptions bounds its history options itself (issue 11, M9), so every way in (HTTP
body, stored JSON, CLI) refuses the same values with an error naming the option."""

from __future__ import annotations

import msgspec
import pytest

from xshathra.tenancy.apps import MAX_HISTORY_SIZE, MAX_HISTORY_TTL, NamespaceOptions


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("history_ttl", 10**20),
        ("history_ttl", MAX_HISTORY_TTL + 1),
        ("history_ttl", -1),
        ("history_size", MAX_HISTORY_SIZE + 1),
        ("history_size", -5),
    ],
)
def test_out_of_range_history_options_are_refused(option: str, value: int) -> None:
    with pytest.raises(ValueError, match=option):
        NamespaceOptions(**{option: value})  # type: ignore[arg-type]
    with pytest.raises(msgspec.ValidationError, match=option):
        msgspec.json.decode(msgspec.json.encode({option: value}), type=NamespaceOptions)


def test_the_bounds_themselves_are_accepted() -> None:
    options = NamespaceOptions(history_size=MAX_HISTORY_SIZE, history_ttl=MAX_HISTORY_TTL)
    assert (options.history_size, options.history_ttl) == (10_000, 30 * 86400)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("allowed_delta_types", "fossil"),
        ("allowed_delta_types", ["fossil", "xdelta"]),
        ("force_recovery_mode", "latest"),
        ("force_positioning", "yes"),
        ("allow_tags_filter", 1),
    ],
)
def test_bad_channel_feature_options_are_refused(option: str, value: object) -> None:
    """Built from keywords (the application service's way), the feature options are checked
    too, with a message naming the option."""
    with pytest.raises(ValueError, match=option):
        NamespaceOptions(**{option: value})  # type: ignore[arg-type]


def test_channel_feature_options_round_trip() -> None:
    options = NamespaceOptions(
        allowed_delta_types=["fossil", "fossil"],  # type: ignore[arg-type]
        force_recovery_mode="cache",
        force_positioning=True,
        allow_tags_filter=True,
    )
    assert options.allowed_delta_types == ("fossil",)
    decoded = msgspec.json.decode(msgspec.json.encode(options), type=NamespaceOptions)
    assert decoded == options
