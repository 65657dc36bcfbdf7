using System.Diagnostics;
using System.Globalization;
using static EventHub.Client.Tests.ClientTestKit;

namespace EventHub.Client.Tests;

/// <summary>Long-polls, follow streams, type filters and surfaces against the shared hub.</summary>
[Collection("hub")]
public sealed class ReadTests(HubFixture fixture)
{
    [Fact]
    public async Task Long_poll_from_last_is_woken_by_an_append()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        // The probe says when the hub has taken the read (sent its response headers): by then it
        // has resolved _last, so the append below is certainly after the read's position.
        var probe = new CallProbe();
        await using var client = fixture.NewClient(new EventHubClientSettings { HttpMessageHandlerFactory = () => probe });
        var topic = Names.Topic("poll");
        await client.CreateTopicAsync(topic, 1, ct);
        await client.AppendAsync(topic, Ev("k", payload: "first"), cancellationToken: ct);

        var started = Stopwatch.StartNew();
        var read = Task.Run(async () =>
        {
            var pages = new List<PartitionPage>();
            await foreach (var page in client.ReadPartitionAsync(topic, 0, Cursors.Last, new ReadOptions { Wait = TimeSpan.FromSeconds(30) }, ct))
            {
                pages.Add(page);
            }
            return pages;
        }, ct);
        await probe.Answered("ReadPartition").WaitAsync(ct);
        Assert.False(read.IsCompleted, "the long-poll answered before anything was appended");
        var appended = (await client.AppendAsync(topic, Ev("k", payload: "second"), cancellationToken: ct)).Results[0];
        var pages = await read.WaitAsync(ct);

        Assert.True(started.Elapsed < TimeSpan.FromSeconds(10), $"the long-poll returned after {started.Elapsed}, not at the append");
        var page = Assert.Single(pages);
        var e = Assert.Single(page.Events);
        Assert.Equal(("second", 2UL), (e.Text(), e.Sequence));
        Assert.Equal(appended.Cursor, page.Cursor);
        Assert.True(page.CaughtUp);
        Assert.Equal(1, probe.Requests("ReadPartition"));
    }

    [Fact]
    public async Task Long_poll_times_out_with_one_empty_page_and_the_cursor_unchanged()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        await using var client = fixture.NewClient();
        var topic = Names.Topic("poll");
        await client.CreateTopicAsync(topic, 1, ct);
        var head = (await client.AppendAsync(topic, Ev("k"), cancellationToken: ct)).Results[0].Cursor;

        var started = Stopwatch.StartNew();
        var (events, cursor, pages) = await ReadAllAsync(client, topic, 0, head, ct, new ReadOptions { Wait = TimeSpan.FromMilliseconds(300) });
        var elapsed = started.Elapsed;

        var page = Assert.Single(pages);
        Assert.True(page.IsEmpty);
        Assert.Empty(events);
        Assert.Equal(head, page.Cursor);
        Assert.Equal(head, cursor);
        Assert.True(page.CaughtUp);
        Assert.InRange(elapsed, TimeSpan.FromMilliseconds(250), TimeSpan.FromSeconds(10));

        // Without a wait the answer is immediate, and just as empty.
        var (none, _, immediate) = await ReadAllAsync(client, topic, 0, head, ct);
        Assert.Empty(none);
        Assert.Equal(head, Assert.Single(immediate).Cursor);
    }

    [Fact]
    public async Task Follow_sends_heartbeats_and_pushes_new_events_in_order()
    {
        using var cts = Deadline();
        await using var client = fixture.NewClient();
        var topic = Names.Topic("follow");
        await client.CreateTopicAsync(topic, 1, cts.Token);

        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cts.Token);
        var options = new FollowOptions { Heartbeat = TimeSpan.FromMilliseconds(100) };
        var stream = client.FollowAsync(topic, 0, Cursors.First, options, stop.Token).GetAsyncEnumerator(stop.Token);
        try
        {
            async Task<PartitionPage> Next()
            {
                Assert.True(await stream.MoveNextAsync(), "the follow stream ended");
                return stream.Current;
            }

            // An empty partition: heartbeats, caught up, at the first cursor.
            var heartbeat = await Next();
            Assert.True(heartbeat.IsEmpty);
            Assert.True(heartbeat.CaughtUp);
            Assert.Equal(0, heartbeat.Partition);

            var got = new List<EventRecord>();
            var cursor = heartbeat.Cursor;
            var heartbeats = 1;
            for (var i = 0; i < 3; i++)
            {
                var appended = (await client.AppendAsync(topic, Ev("k", payload: i.ToString(CultureInfo.InvariantCulture)), cancellationToken: stop.Token)).Results[0];
                while (cursor != appended.Cursor)
                {
                    var page = await Next();
                    heartbeats += page.IsEmpty ? 1 : 0;
                    got.AddRange(page.Events);
                    cursor = page.Cursor;
                    Assert.True(got.Count <= i + 1, $"more events than appended: {KeysOf(got)}");
                }
            }
            Assert.Equal("k@1 k@2 k@3", KeysOf(got));
            Assert.Equal(["0", "1", "2"], got.Select(e => e.Text()));

            // Idle again: heartbeats at the last event's cursor.
            var after = await Next();
            Assert.True(after.IsEmpty);
            Assert.Equal(cursor, after.Cursor);
            Assert.True(after.CaughtUp);

            // Cancelling the token ends the stream with OperationCanceledException.
            await stop.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
            {
                while (await stream.MoveNextAsync())
                {
                }
            });
            Assert.False(cts.IsCancellationRequested);
        }
        finally
        {
            await stream.DisposeAsync();
        }
    }

    [Fact]
    public async Task Follow_from_last_starts_at_the_head()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        await using var client = fixture.NewClient();
        var topic = Names.Topic("follow");
        await client.CreateTopicAsync(topic, 1, ct);
        var head = (await client.AppendAsync(topic, [Ev("k", payload: "old-1"), Ev("k", payload: "old-2")], cancellationToken: ct)).Results[1].Cursor;

        // Cursors.Last is the default of FollowAsync.
        var appended = false;
        await foreach (var page in client.FollowAsync(topic, 0, options: new FollowOptions { Heartbeat = TimeSpan.FromMilliseconds(100) }, cancellationToken: ct))
        {
            if (page.IsEmpty)
            {
                Assert.Equal(head, page.Cursor);
                if (!appended)
                {
                    await client.AppendAsync(topic, Ev("k", payload: "new"), cancellationToken: ct);
                    appended = true;
                }
                continue;
            }
            Assert.Equal(["new"], page.Events.Select(e => e.Text()));
            Assert.Equal(3UL, page.Events[0].Sequence);
            break;
        }
    }

    [Fact]
    public async Task Types_filter_skips_other_types_and_still_advances_the_cursor()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        await using var client = fixture.NewClient();
        var topic = Names.Topic("types");
        await client.CreateTopicAsync(topic, 1, ct);
        var appended = await client.AppendAsync(topic, [Ev("a", "Keep", "1"), Ev("b", "Skip", "2"), Ev("c", "Keep", "3"), Ev("d", "Skip", "4")], cancellationToken: ct);
        var head = appended.Results[3].Cursor;

        var (kept, cursor, _) = await ReadAllAsync(client, topic, 0, Cursors.First, ct, new ReadOptions { Types = ["Keep"] });
        Assert.Equal("a@1 c@1", KeysOf(kept));
        Assert.Equal([1UL, 3UL], kept.Select(e => e.Sequence));
        Assert.Equal(head, cursor);
        var (rest, _, _) = await ReadAllAsync(client, topic, 0, cursor, ct);
        Assert.Empty(rest);

        // Several types; a filter matching nothing still moves the cursor to the head, with an empty page.
        var (both, _, _) = await ReadAllAsync(client, topic, 0, Cursors.First, ct, new ReadOptions { Types = ["Keep", "Skip"] });
        Assert.Equal(4, both.Count);
        var (none, noneCursor, pages) = await ReadAllAsync(client, topic, 0, Cursors.First, ct, new ReadOptions { Types = ["Other"] });
        Assert.Empty(none);
        Assert.Equal(head, noneCursor);
        Assert.All(pages, p => Assert.True(p.IsEmpty));

        // A follow with a filter moves its cursor past skipped events too.
        var sent = false;
        await foreach (var page in client.FollowAsync(topic, 0, head, new FollowOptions { Types = ["Keep"], Heartbeat = TimeSpan.FromMilliseconds(100) }, ct))
        {
            if (page.IsEmpty)
            {
                if (!sent)
                {
                    await client.AppendAsync(topic, [Ev("e", "Skip", "5"), Ev("f", "Keep", "6")], cancellationToken: ct);
                    sent = true;
                }
                continue;
            }
            Assert.Equal("f@1", KeysOf(page.Events));
            Assert.Equal(6UL, page.Events[0].Sequence);
            Assert.Equal(page.Events[0].Cursor, page.Cursor);
            break;
        }
    }

    [Fact]
    public async Task Surface_then_continue_from_its_cursors_with_no_gap_or_overlap()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        await using var client = fixture.NewClient();
        var topic = Names.Topic("surface");
        await client.CreateTopicAsync(topic, 3, ct);
        await client.AppendAsync(topic, [Ev("k1", "Created", "1"), Ev("k2", "Created", "1"), Ev("k3", "Created", "1")], cancellationToken: ct);
        await client.AppendAsync(topic, Ev("k1", "Updated", "2"), cancellationToken: ct);
        await client.AppendAsync(topic, Ev("k2", "Deleted") with { Tombstone = true }, cancellationToken: ct);
        var bad = await client.AppendAsync(topic, Ev("k3", "Updated", "2"), cancellationToken: ct);
        var invalidated = await client.InvalidateAsync(topic, bad.TransactionId, "wrong amount", ct);

        var (surface, pages) = await SurfaceAllAsync(client, topic, ct);
        // k2 is deleted; k3's latest event is invalidated, so its first one counts.
        Assert.Equal("k1@2 k3@1", KeysOf(surface));
        Assert.Equal(["2", "1"], surface.Select(e => e.Text()));
        Assert.All(pages, p => Assert.Equal(invalidated.MarkerTransactionId, p.AsOfTransaction));
        Assert.All(pages, p => Assert.Equal("", p.NextAfterKey));
        var cursors = pages[0].Cursors;
        Assert.Equal([0, 1, 2], cursors.Keys.Order());
        Assert.All(pages, p => Assert.Equal(cursors.OrderBy(c => c.Key), p.Cursors.OrderBy(c => c.Key)));
        // The snapshot's cursors are the heads: nothing is past them yet.
        var info = await client.GetTopicAsync(topic, ct);
        Assert.Equal(info.Partitions.Select(p => p.HeadCursor), cursors.OrderBy(c => c.Key).Select(c => c.Value));

        // What comes after the snapshot is read once, from its cursors.
        await client.AppendAsync(topic, [Ev("k1", "Updated", "3"), Ev("k5", "Created", "1")], cancellationToken: ct);
        var after = new List<EventRecord>();
        foreach (var (partition, cursor) in cursors)
        {
            after.AddRange((await ReadAllAsync(client, topic, partition, cursor, ct)).Events);
        }
        Assert.Equal("k1@3 k5@1", KeysOf(after.OrderBy(e => e.Key, StringComparer.Ordinal)));
    }

    [Fact]
    public async Task Surface_as_of_a_transaction_travels_back_in_time()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        await using var client = fixture.NewClient();
        var topic = Names.Topic("asof");
        await client.CreateTopicAsync(topic, 3, ct);
        var first = await client.AppendAsync(topic, [Ev("k1", "Created", "1"), Ev("k2", "Created", "1"), Ev("k3", "Created", "1")], cancellationToken: ct);
        var second = await client.AppendAsync(topic, [Ev("k1", "Updated", "2"), Ev("k2", "Deleted") with { Tombstone = true }], cancellationToken: ct);
        var bad = await client.AppendAsync(topic, [Ev("k3", "Updated", "2"), Ev("k4", "Created", "1")], cancellationToken: ct);
        var invalidation = await client.InvalidateAsync(topic, bad.TransactionId, "undo", ct);

        var (old, oldPages) = await SurfaceAllAsync(client, topic, ct, new SurfaceOptions { AsOfTransaction = first.TransactionId });
        Assert.Equal("k1@1 k2@1 k3@1", KeysOf(old));
        Assert.Equal(first.TransactionId, oldPages[^1].AsOfTransaction);
        // The old snapshot's cursors are right after the first transaction: reading on from them
        // gives exactly what came after it.
        var later = new List<EventRecord>();
        foreach (var (partition, cursor) in oldPages[0].Cursors)
        {
            var (events, _, _) = await ReadAllAsync(client, topic, partition, cursor, ct);
            later.AddRange(events.Where(e => !e.IsInvalidationMarker));
        }
        Assert.Equal([second.TransactionId, bad.TransactionId], later.Select(e => e.TransactionId).Distinct().Order());
        Assert.Equal(4, later.Count);

        var (middle, _) = await SurfaceAllAsync(client, topic, ct, new SurfaceOptions { AsOfTransaction = second.TransactionId });
        Assert.Equal("k1@2 k3@1", KeysOf(middle));
        // Right after the bad transaction it was not invalidated yet; right after the invalidation
        // (the latest surface) its events are ignored and k3 falls back.
        var (beforeInvalidation, _) = await SurfaceAllAsync(client, topic, ct, new SurfaceOptions { AsOfTransaction = bad.TransactionId });
        Assert.Equal("k1@2 k3@2 k4@1", KeysOf(beforeInvalidation));
        var (latest, latestPages) = await SurfaceAllAsync(client, topic, ct);
        Assert.Equal("k1@2 k3@1", KeysOf(latest));
        Assert.Equal(invalidation.MarkerTransactionId, latestPages[^1].AsOfTransaction);
        var (same, _) = await SurfaceAllAsync(client, topic, ct, new SurfaceOptions { AsOfTransaction = invalidation.MarkerTransactionId });
        Assert.Equal(KeysOf(latest), KeysOf(same));
    }

    [Fact]
    public async Task Surface_leaves_out_tombstoned_keys_until_a_later_event_revives_them()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        await using var client = fixture.NewClient();
        var topic = Names.Topic("tomb");
        await client.AppendAsync(topic, [Ev("a", "Created", "1"), Ev("b", "Created", "1")], cancellationToken: ct);
        await client.AppendAsync(topic, Ev("a", "Deleted") with { Tombstone = true }, cancellationToken: ct);
        Assert.Equal("b@1", KeysOf((await SurfaceAllAsync(client, topic, ct)).Events));

        // The tombstone is an ordinary event otherwise.
        var history = (await ReadKeyAllAsync(client, topic, "a", ct)).SelectMany(p => p.Events).ToList();
        Assert.Equal([false, true], history.Select(e => e.Tombstone));

        await client.AppendAsync(topic, Ev("a", "Created", "again"), cancellationToken: ct);
        var (revived, _) = await SurfaceAllAsync(client, topic, ct);
        Assert.Equal("a@3 b@1", KeysOf(revived));
        Assert.False(revived[0].Tombstone);
    }

    [Fact]
    public async Task Surface_paging_with_limit_and_next_after_key_is_one_snapshot()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        await using var client = fixture.NewClient();
        var topic = Names.Topic("spage");
        await client.CreateTopicAsync(topic, 2, ct);
        await client.AppendAsync(topic, Enumerable.Range(0, 25).Select(i => Ev($"p-{i:00}", "Created", "1")), cancellationToken: ct);
        await client.AppendAsync(topic, Ev("other", "Created", "1"), cancellationToken: ct);

        var all = new List<EventRecord>();
        var options = new SurfaceOptions { KeyPrefix = "p-", Limit = 10 };
        ulong? asOf = null;
        for (var calls = 1; ; calls++)
        {
            var (events, pages) = await SurfaceAllAsync(client, topic, ct, options);
            all.AddRange(events);
            asOf ??= pages[^1].AsOfTransaction;
            Assert.All(pages, p => Assert.Equal(asOf, p.AsOfTransaction));
            if (calls == 1)
            {
                // Changes after the snapshot must not show in later pages.
                await client.AppendAsync(topic, [Ev("p-15", "Updated", "2"), Ev("p-99", "Created", "1"), Ev("p-00", "Updated", "2")], cancellationToken: ct);
            }
            var next = pages[^1].NextAfterKey;
            if (next == "")
            {
                Assert.Equal(5, events.Count);
                break;
            }
            Assert.True(calls <= 3, "more pages than 25 keys in tens make");
            Assert.Equal(10, events.Count);
            Assert.Equal(events[^1].Key, next);
            options = options with { AfterKey = next, AsOfTransaction = pages[^1].AsOfTransaction };
        }
        Assert.Equal(string.Join(" ", Enumerable.Range(0, 25).Select(i => $"p-{i:00}@1")), KeysOf(all));
        Assert.All(all, e => Assert.Equal("1", e.Text()));

        // A fresh surface sees the changes; a prefix narrows it.
        var (now, _) = await SurfaceAllAsync(client, topic, ct, new SurfaceOptions { KeyPrefix = "p-" });
        Assert.Equal(26, now.Count);
        Assert.Equal("p-00@2", KeysOf(now.Take(1)));
        Assert.Equal("p-99@1", KeysOf((await SurfaceAllAsync(client, topic, ct, new SurfaceOptions { KeyPrefix = "p-9" })).Events));
        Assert.Equal("p-99@1", KeysOf((await SurfaceAllAsync(client, topic, ct, new SurfaceOptions { AfterKey = "p-24" })).Events));
        Assert.Equal("other@1", KeysOf((await SurfaceAllAsync(client, topic, ct, new SurfaceOptions { KeyPrefix = "o" })).Events));
    }

    [Fact]
    public async Task Surface_of_more_keys_than_a_page_holds_comes_in_several_pages_of_one_snapshot()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        await using var client = fixture.NewClient();
        var topic = Names.Topic("big");
        await client.AppendAsync(topic, Enumerable.Range(0, 2500).Select(i => Ev($"k{i:0000}")), cancellationToken: ct);

        var (events, pages) = await SurfaceAllAsync(client, topic, ct);
        Assert.True(pages.Count >= 3, $"{pages.Count} pages for 2,500 keys (a page holds up to 1,000)");
        Assert.Equal(Enumerable.Range(0, 2500).Select(i => $"k{i:0000}"), events.Select(e => e.Key));
        Assert.Single(pages.Select(p => p.AsOfTransaction).Distinct());

        // A limit over a page's size stops the listing at the limit, across pages.
        var (limited, limitedPages) = await SurfaceAllAsync(client, topic, ct, new SurfaceOptions { Limit = 1500 });
        Assert.Equal(Enumerable.Range(0, 1500).Select(i => $"k{i:0000}"), limited.Select(e => e.Key));
        Assert.Equal("k1499", limitedPages[^1].NextAfterKey);
    }
}
