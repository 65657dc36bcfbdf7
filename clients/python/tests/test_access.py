"""A hub started with ``--tokens``: the client's ``metadata`` carries the bearer token."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import start_hub, stop_hub

import eventhub

WRITER = "py-writer-0123456789abcdef"
READER = "py-reader-0123456789abcdef"


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def test_bearer_tokens(tmp_path: Path) -> None:
    """The token in ``metadata`` is sent with every call; without one a call raises
    Unauthenticated, and beyond the token's grants PermissionDenied."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{WRITER} admin:py-*\n{READER} read:py-*\n")
    hub = start_hub(tmp_path, "--tokens", str(tokens))
    try:
        with (
            eventhub.Client(hub.target, metadata=bearer(WRITER)) as writer,
            eventhub.Client(hub.target, metadata=bearer(READER)) as reader,
            eventhub.Client(hub.target) as anonymous,
        ):
            writer.create_topic("py-orders", 2)
            writer.append("py-orders", [eventhub.AppendEvent(key="k", type="T", payload=b"x")])
            pages = list(reader.read_partition("py-orders", eventhub.partition_for("k", 2)))
            assert sum(len(p.events) for p in pages) == 1
            with pytest.raises(eventhub.PermissionDenied, match="append:py-orders"):
                reader.append("py-orders", [eventhub.AppendEvent(key="k", type="T", payload=b"y")])
            with pytest.raises(eventhub.Unauthenticated, match="authorization: Bearer"):
                anonymous.get_topic("py-orders")
    finally:
        assert stop_hub(hub) == 0
