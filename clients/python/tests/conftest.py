"""Starts one real hub process for the test session.

The hub binary is ``$EVENTHUB_BIN``, by default ``<repo>/target/debug/eventhub``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import eventhub

REPO = Path(__file__).resolve().parents[3]
HUB_BIN = os.environ.get("EVENTHUB_BIN") or str(REPO / "target" / "debug" / "eventhub")
DEFAULT_PARTITIONS = 3
_LISTENING = re.compile(r"^eventhub listening on (127\.0\.0\.1:\d+)$")


@dataclass
class Hub:
    process: subprocess.Popen[str]
    target: str
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def start_hub(directory: Path, *extra: str, listen: str = "127.0.0.1:0") -> Hub:
    """Starts ``eventhub serve`` on ``listen`` (a free port by default) with
    the SQLite database in ``directory`` (fresh the first time) and waits for
    its "listening" line."""
    log = directory / "hub.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [
                HUB_BIN,
                "serve",
                "--listen",
                listen,
                "--database",
                f"sqlite://{directory / 'hub.db'}",
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
        )
    assert process.stdout is not None
    first_line: list[str] = []
    reader = threading.Thread(target=lambda: first_line.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout=60)
    line = first_line[0].strip() if first_line else ""
    match = _LISTENING.match(line)
    if not match:
        process.kill()
        process.wait()
        raise RuntimeError(
            f"{HUB_BIN} did not print 'eventhub listening on 127.0.0.1:PORT' "
            f"(got {line!r}); its log:\n{log.read_text(errors='replace')[-4000:]}"
        )
    # Keep draining stdout so the hub can never block on a full pipe.
    threading.Thread(target=process.stdout.read, daemon=True).start()
    return Hub(process, match.group(1), log)


def stop_hub(hub: Hub) -> int:
    """Stops the hub with SIGTERM and returns its exit code."""
    if hub.process.poll() is None:
        hub.process.send_signal(signal.SIGTERM)
    try:
        return hub.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        hub.process.kill()
        hub.process.wait()
        raise AssertionError(f"the hub did not stop within 30s of SIGTERM; log:\n{hub.log_tail()}") from None


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    if not os.access(HUB_BIN, os.X_OK):
        pytest.fail(f"no hub binary at {HUB_BIN}; build it or set EVENTHUB_BIN")
    started = start_hub(tmp_path_factory.mktemp("hub"), "--default-partitions", str(DEFAULT_PARTITIONS))
    yield started
    code = stop_hub(started)
    assert code == 0, f"the hub exited with {code} on SIGTERM; log:\n{started.log_tail()}"


@pytest.fixture
def client(hub: Hub) -> Iterator[eventhub.Client]:
    with eventhub.Client(hub.target, timeout=30) as c:
        yield c
