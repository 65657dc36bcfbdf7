"""The asyncio client against a real hub."""

from __future__ import annotations

import asyncio

import pytest
from _support import unique_topic
from conftest import Hub

import eventhub
from eventhub import AppendEvent


def test_async_round_trip_follow_and_errors(hub: Hub) -> None:
    async def main() -> None:
        async with eventhub.AsyncClient(hub.target) as client:
            topic = unique_topic()
            created = await client.create_topic(topic, 1)
            assert created.created
            response = await client.append(topic, [AppendEvent(key="k", type="T", payload=b"1")])
            assert response.results[0].sequence == 1

            pages = [p async for p in client.read_partition(topic, 0)]
            assert [e.payload for p in pages for e in p.events] == [b"1"]

            stream = client.read_partition(topic, 0, pages[-1].cursor, follow=True, heartbeat=0.05)
            await client.append(topic, [AppendEvent(key="k", type="T", payload=b"2")])
            async with asyncio.timeout(30):
                async for page in stream:
                    if page.events:
                        assert [e.payload for e in page.events] == [b"2"]
                        break
            stream.cancel()

            # cancel() from another task ends an iteration blocked on the stream.
            idle = client.read_partition(topic, 0, "_last", follow=True, heartbeat=0.05)
            reading = asyncio.Event()

            async def drain() -> int:
                pages = 0
                async for _ in idle:
                    pages += 1
                    reading.set()
                return pages

            task = asyncio.ensure_future(drain())
            await asyncio.wait_for(reading.wait(), 30)
            idle.cancel()
            assert await asyncio.wait_for(task, 30) >= 1

            surface = [e.payload async for p in client.surface(topic) for e in p.events]
            assert surface == [b"2"]
            assert [p.current_version async for p in client.read_key(topic, "k")] == [2]
            assert topic in [t.name async for t in client.list_topics(topic)]
            assert (await client.get_topic(topic)).event_count == 2
            await client.invalidate(topic, response.transaction_id, "test")

            with pytest.raises(eventhub.NotFound):
                await client.get_topic(unique_topic("missing"))
            with pytest.raises(eventhub.InvalidArgument):
                _ = [p async for p in client.read_partition(topic, 0, "not-a-cursor")]
            with pytest.raises(eventhub.FailedPrecondition) as error:
                await client.append(topic, [AppendEvent(key="k", type="T", expected=eventhub.EXPECTED_VERSION_NO_KEY)])
            assert (error.value.key, error.value.actual_version) == ("k", 2)

    asyncio.run(main())
