using System.Globalization;
using System.Text;
using static EventHub.Client.Tests.ClientTestKit;

namespace EventHub.Client.Tests;

/// <summary>Append, read back, topics, deduplication, key histories and invalidation against the
/// shared hub.</summary>
[Collection("hub")]
public sealed class ClientTests(HubFixture fixture)
{
    [Fact]
    public async Task Round_trip_keeps_every_field_of_every_event()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        await using var client = fixture.NewClient();
        var topic = Names.Topic("round");
        Assert.True((await client.CreateTopicAsync(topic, 4, ct)).Created);
        var events = Enumerable.Range(0, 24).Select(i =>
            new EventData($"order-{i % 6}", i % 2 == 0 ? "OrderPlaced" : "OrderShipped", Encoding.UTF8.GetBytes($"{{\"n\":{i}}}"))
            {
                ContentType = "application/json",
                Headers = new Dictionary<string, string> { ["trace-id"] = $"t-{i}", ["ключ"] = "значение" },
                EventId = $"ev-{i}",
            }).ToList();
        var before = DateTimeOffset.UtcNow;
        var appended = await client.AppendAsync(topic, events, cancellationToken: ct);
        var after = DateTimeOffset.UtcNow;

        Assert.True(appended.TransactionId > 0);
        Assert.Equal(events.Count, appended.Results.Count);
        var versions = new Dictionary<string, ulong>();
        var sequences = new Dictionary<int, ulong>();
        for (var i = 0; i < events.Count; i++)
        {
            var (e, r) = (events[i], appended.Results[i]);
            versions[e.Key] = versions.GetValueOrDefault(e.Key) + 1;
            sequences[r.Partition] = sequences.GetValueOrDefault(r.Partition) + 1;
            Assert.Equal(Partition.For(e.Key, 4), r.Partition);
            Assert.Equal(sequences[r.Partition], r.Sequence);
            Assert.Equal(versions[e.Key], r.KeyVersion);
            Assert.Equal(appended.TransactionId, r.TransactionId);
            Assert.Equal(AppendOutcome.Stored, r.Outcome);
            Assert.False(r.Deduplicated);
            Assert.False(string.IsNullOrEmpty(r.Cursor));
        }

        var heads = new Dictionary<int, string>();
        var read = 0;
        DateTimeOffset? committed = null;
        for (var p = 0; p < 4; p++)
        {
            var (got, cursor, _) = await ReadAllAsync(client, topic, p, Cursors.First, ct, new ReadOptions { MaxEvents = 2 });
            heads[p] = cursor;
            var want = Enumerable.Range(0, events.Count).Where(i => appended.Results[i].Partition == p).ToList();
            Assert.Equal(want.Count, got.Count);
            for (var j = 0; j < got.Count; j++)
            {
                var (e, r, g) = (events[want[j]], appended.Results[want[j]], got[j]);
                Assert.Equal(p, g.Partition);
                Assert.Equal(r.Sequence, g.Sequence);
                Assert.Equal((ulong)j + 1, g.Sequence);
                Assert.Equal(r.Cursor, g.Cursor);
                Assert.Equal(appended.TransactionId, g.TransactionId);
                Assert.Equal(e.Key, g.Key);
                Assert.Equal(r.KeyVersion, g.KeyVersion);
                Assert.Equal(e.EventId, g.EventId);
                Assert.Equal(e.Type, g.Type);
                Assert.Equal("application/json", g.ContentType);
                Assert.Equal(e.Headers!.OrderBy(h => h.Key), g.Headers.OrderBy(h => h.Key));
                Assert.Equal(e.Payload.ToArray(), g.Payload.ToArray());
                Assert.False(g.Tombstone);
                Assert.False(g.TransactionInvalidated);
                Assert.Null(g.Invalidation);
                Assert.False(g.IsInvalidationMarker);
                // The hub's clock, on this machine: within the call, give or take a second.
                Assert.InRange(g.CommittedAt, before.AddSeconds(-1), after.AddSeconds(1));
                Assert.Equal(TimeSpan.Zero, g.CommittedAt.Offset);
                // One transaction, one commit time.
                committed ??= g.CommittedAt;
                Assert.Equal(committed, g.CommittedAt);
            }
            if (got.Count > 0)
            {
                Assert.Equal(got[^1].Cursor, cursor);
            }
            read += got.Count;
        }
        Assert.Equal(events.Count, read);

        var info = await client.GetTopicAsync(topic, ct);
        Assert.Equal(topic, info.Name);
        Assert.Equal(4, info.PartitionCount);
        Assert.Equal(24UL, info.EventCount);
        Assert.Equal(appended.TransactionId, info.LastTransactionId);
        Assert.InRange(info.CreatedAt, before.AddMinutes(-1), after.AddSeconds(1));
        Assert.Equal([0, 1, 2, 3], info.Partitions.Select(p => p.Partition));
        foreach (var partition in info.Partitions)
        {
            Assert.Equal(sequences.GetValueOrDefault(partition.Partition), partition.EventCount);
            Assert.Equal(heads[partition.Partition], partition.HeadCursor);
            // Reading from the head cursor finds nothing more: one empty, caught-up page.
            var (rest, _, pages) = await ReadAllAsync(client, topic, partition.Partition, partition.HeadCursor, ct);
            Assert.Empty(rest);
            Assert.True(Assert.Single(pages).CaughtUp);
        }

        var listed = new List<string>();
        await foreach (var t in client.ListTopicsAsync(topic, cancellationToken: ct))
        {
            listed.Add(t.Name);
        }
        Assert.Equal([topic], listed);
    }

    [Fact]
    public async Task Pages_of_MaxEvents_and_continuing_from_a_pages_cursor()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        await using var client = fixture.NewClient();
        var topic = Names.Topic("pages");
        await client.CreateTopicAsync(topic, 1, ct);
        await client.AppendAsync(topic, Enumerable.Range(1, 25).Select(i => Ev("k", payload: i.ToString(CultureInfo.InvariantCulture))), cancellationToken: ct);

        var (events, cursor, pages) = await ReadAllAsync(client, topic, 0, Cursors.First, ct, new ReadOptions { MaxEvents = 10 });
        Assert.Equal([10, 10, 5], pages.Select(p => p.Events.Count));
        Assert.Equal([false, false, true], pages.Select(p => p.CaughtUp));
        Assert.All(pages, p => Assert.Equal(p.Events[^1].Cursor, p.Cursor));
        Assert.Equal(Enumerable.Range(1, 25).Select(i => (ulong)i), events.Select(e => e.Sequence));
        Assert.Equal(events[^1].Cursor, cursor);

        // A page's cursor continues right after it; so does an event's.
        var (rest, _, _) = await ReadAllAsync(client, topic, 0, pages[0].Cursor, ct);
        Assert.Equal(Enumerable.Range(11, 15).Select(i => (ulong)i), rest.Select(e => e.Sequence));
        Assert.Equal(Enumerable.Range(11, 15).Select(i => i.ToString(CultureInfo.InvariantCulture)), rest.Select(e => e.Text()));
        var (fromEvent, _, _) = await ReadAllAsync(client, topic, 0, events[0].Cursor, ct);
        Assert.Equal(2UL, fromEvent[0].Sequence);
        Assert.Equal(24, fromEvent.Count);
        // The empty cursor means _first.
        var (fromEmpty, _, _) = await ReadAllAsync(client, topic, 0, "", ct);
        Assert.Equal(25, fromEmpty.Count);
    }

    [Fact]
    public async Task Append_creates_an_unknown_topic_and_topics_are_listed_across_pages()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        await using var client = fixture.NewClient();
        var prefix = Names.Topic("list");

        var auto = await client.AppendAsync($"{prefix}.b", Ev("k"), cancellationToken: ct);
        Assert.Equal(Partition.For("k", HubFixture.DefaultPartitions), auto.Results[0].Partition);
        var b = await client.GetTopicAsync($"{prefix}.b", ct);
        Assert.Equal(HubFixture.DefaultPartitions, b.PartitionCount);
        Assert.Equal(1UL, b.EventCount);

        var created = await client.CreateTopicAsync($"{prefix}.a", 2, ct);
        Assert.True(created.Created);
        Assert.Equal(2, created.Topic.PartitionCount);
        Assert.Equal($"{prefix}.a", created.Topic.Name);
        Assert.Equal(0UL, created.Topic.LastTransactionId);
        var again = await client.CreateTopicAsync($"{prefix}.a", 2, ct);
        Assert.False(again.Created);
        Assert.Equal(created.Topic.CreatedAt, again.Topic.CreatedAt);
        // 0 partitions means the hub's default.
        var byDefault = await client.CreateTopicAsync($"{prefix}.c", 0, ct);
        Assert.Equal(HubFixture.DefaultPartitions, byDefault.Topic.PartitionCount);

        // Pages of one topic: three pages, in name order, nothing twice.
        var names = new List<string>();
        await foreach (var t in client.ListTopicsAsync(prefix, pageSize: 1, cancellationToken: ct))
        {
            names.Add(t.Name);
        }
        Assert.Equal([$"{prefix}.a", $"{prefix}.b", $"{prefix}.c"], names);
        var two = new List<TopicInfo>();
        await foreach (var t in client.ListTopicsAsync(prefix, pageSize: 2, cancellationToken: ct))
        {
            two.Add(t);
        }
        Assert.Equal(names, two.Select(t => t.Name));
        Assert.Equal([2, HubFixture.DefaultPartitions, HubFixture.DefaultPartitions], two.Select(t => t.PartitionCount));

        // Without a prefix every topic comes, sorted by name, these among them.
        var all = new List<string>();
        await foreach (var t in client.ListTopicsAsync(cancellationToken: ct))
        {
            all.Add(t.Name);
        }
        Assert.Equal(all.Order(StringComparer.Ordinal), all);
        Assert.Equal(all.Count, all.Distinct().Count());
        Assert.Subset(all.ToHashSet(), names.ToHashSet());
    }

    [Fact]
    public async Task An_event_id_is_stored_once_and_dedup_by_content_skips_only_the_keys_latest_content()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        await using var client = fixture.NewClient();
        var topic = Names.Topic("dedup");
        await client.CreateTopicAsync(topic, 2, ct);

        var first = await client.AppendAsync(topic, Ev("k", "Set", "A") with { EventId = "id-1" }, cancellationToken: ct);
        // The same id with other content: nothing stored, the result points at the first copy.
        var again = await client.AppendAsync(topic, Ev("k", "Set", "B") with { EventId = "id-1" }, cancellationToken: ct);
        var (a, b) = (first.Results[0], again.Results[0]);
        Assert.Equal(AppendOutcome.Stored, a.Outcome);
        Assert.Equal(AppendOutcome.DuplicateEventId, b.Outcome);
        Assert.True(b.Deduplicated);
        Assert.Equal(a with { Outcome = AppendOutcome.DuplicateEventId }, b);
        Assert.Equal(first.TransactionId, again.TransactionId);

        async Task<AppendedEvent> Dedup(EventData e) => (await client.AppendAsync(topic, e, dedupByContent: true, ct)).Results[0];
        var same = await Dedup(Ev("k", "Set", "A"));
        Assert.Equal(AppendOutcome.DuplicateContent, same.Outcome);
        Assert.True(same.Deduplicated);
        Assert.Equal(a.Sequence, same.Sequence);
        Assert.Equal(a.Cursor, same.Cursor);
        // Another header, content type or type is other content.
        var header = await Dedup(Ev("k", "Set", "A") with { Headers = new Dictionary<string, string> { ["h"] = "1" } });
        Assert.Equal((AppendOutcome.Stored, 2UL), (header.Outcome, header.KeyVersion));
        var contentB = await Dedup(Ev("k", "Set", "B"));
        Assert.Equal((AppendOutcome.Stored, 3UL), (contentB.Outcome, contentB.KeyVersion));
        // A, B, A stores three: only the key's latest event counts.
        var contentA = await Dedup(Ev("k", "Set", "A"));
        Assert.Equal((AppendOutcome.Stored, 4UL), (contentA.Outcome, contentA.KeyVersion));
        // Without dedup the same content is stored again.
        var plain = (await client.AppendAsync(topic, Ev("k", "Set", "A"), cancellationToken: ct)).Results[0];
        Assert.Equal((AppendOutcome.Stored, 5UL), (plain.Outcome, plain.KeyVersion));

        var (stored, _, _) = await ReadAllAsync(client, topic, Partition.For("k", 2), Cursors.First, ct);
        Assert.Equal("k@1 k@2 k@3 k@4 k@5", KeysOf(stored));
        Assert.Equal(["A", "A", "B", "A", "A"], stored.Select(e => e.Text()));
        Assert.Equal("id-1", stored[0].EventId);
        Assert.Equal(5UL, (await client.GetTopicAsync(topic, ct)).EventCount);
    }

    [Fact]
    public async Task Read_key_and_expected_versions()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        await using var client = fixture.NewClient();
        var topic = Names.Topic("key");
        await client.CreateTopicAsync(topic, 3, ct);

        var unknown = await ReadKeyAllAsync(client, topic, "acc-1", ct);
        Assert.Equal((0, 0UL), (Assert.Single(unknown).Events.Count, unknown[0].CurrentVersion));

        await client.AppendAsync(topic, Ev("acc-1", "Opened", "1") with { Expected = ExpectedVersion.NoKey }, cancellationToken: ct);
        await client.AppendAsync(topic, Ev("acc-1", "Deposited", "2") with { Expected = ExpectedVersion.Exact(1) }, cancellationToken: ct);
        var third = await client.AppendAsync(topic, Ev("acc-1", "Deposited", "3") with { Expected = ExpectedVersion.Exists }, cancellationToken: ct);
        Assert.Equal(3UL, third.Results[0].KeyVersion);
        // Any (the default) holds always; Exact(0) holds for a new key.
        Assert.Equal(1UL, (await client.AppendAsync(topic, Ev("acc-4") with { Expected = ExpectedVersion.Exact(0) }, cancellationToken: ct)).Results[0].KeyVersion);

        var conflicts = new (string Key, ExpectedVersion Expected, ulong Actual)[]
        {
            ("acc-1", ExpectedVersion.NoKey, 3),
            ("acc-1", ExpectedVersion.Exact(2), 3),
            ("acc-1", ExpectedVersion.Exact(0), 3),
            ("acc-1", ExpectedVersion.Exact(4), 3),
            ("acc-2", ExpectedVersion.Exists, 0),
            ("acc-2", ExpectedVersion.Exact(1), 0),
            ("ключ 1", ExpectedVersion.Exists, 0),
        };
        foreach (var (key, expected, actual) in conflicts)
        {
            // The conflicting event comes second: the first must not be stored either.
            var conflict = await Assert.ThrowsAsync<KeyVersionConflictException>(() =>
                client.AppendAsync(topic, [Ev("acc-3", "Opened", "x"), Ev(key, "Deposited", "x") with { Expected = expected }], cancellationToken: ct));
            Assert.Equal(key, conflict.Key);
            Assert.Equal(actual, conflict.ActualVersion);
            Assert.Equal(Grpc.Core.StatusCode.FailedPrecondition, conflict.StatusCode);
            AssertHubMessage(conflict);
        }
        var refused = await ReadKeyAllAsync(client, topic, "acc-3", ct);
        Assert.Equal((0, 0UL), (Assert.Single(refused).Events.Count, refused[0].CurrentVersion));
        Assert.Equal(4UL, (await client.GetTopicAsync(topic, ct)).EventCount);

        var history = await ReadKeyAllAsync(client, topic, "acc-1", ct);
        Assert.Equal("acc-1@1 acc-1@2 acc-1@3", KeysOf(history.SelectMany(p => p.Events)));
        Assert.Equal(["1", "2", "3"], history.SelectMany(p => p.Events).Select(e => e.Text()));
        Assert.Equal(["Opened", "Deposited", "Deposited"], history.SelectMany(p => p.Events).Select(e => e.Type));
        Assert.All(history, p => Assert.Equal(3UL, p.CurrentVersion));
        Assert.All(history.SelectMany(p => p.Events), e => Assert.Equal(Partition.For("acc-1", 3), e.Partition));
        Assert.Equal("acc-1@2 acc-1@3", KeysOf((await ReadKeyAllAsync(client, topic, "acc-1", ct, fromVersion: 2)).SelectMany(p => p.Events)));
        // 1 means from the start, like 0.
        Assert.Equal("acc-1@1 acc-1@2 acc-1@3", KeysOf((await ReadKeyAllAsync(client, topic, "acc-1", ct, fromVersion: 1)).SelectMany(p => p.Events)));
        // Pages of one event: three pages, one key history.
        var paged = await ReadKeyAllAsync(client, topic, "acc-1", ct, maxEvents: 1);
        Assert.Equal([1, 1, 1], paged.Select(p => p.Events.Count));
        Assert.Equal("acc-1@1 acc-1@2 acc-1@3", KeysOf(paged.SelectMany(p => p.Events)));
        Assert.Empty((await ReadKeyAllAsync(client, topic, "acc-1", ct, fromVersion: 4)).SelectMany(p => p.Events));
    }

    [Fact]
    public async Task Read_key_of_an_unknown_key_is_one_empty_page_at_version_0()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        await using var client = fixture.NewClient();
        var topic = Names.Topic("nokey");
        await client.AppendAsync(topic, Ev("k"), cancellationToken: ct);
        var pages = await ReadKeyAllAsync(client, topic, "nobody", ct);
        var page = Assert.Single(pages);
        Assert.Empty(page.Events);
        Assert.Equal(0UL, page.CurrentVersion);
    }

    [Fact]
    public async Task Invalidate_appends_markers_flags_the_events_and_surface_falls_back()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        await using var client = fixture.NewClient();
        var topic = Names.Topic("inval");
        await client.CreateTopicAsync(topic, 2, ct);
        string[] keys = [KeyIn(0, 2), KeyIn(1, 2)];
        var good = await client.AppendAsync(topic, [Ev(keys[0], "T", "good-0"), Ev(keys[1], "T", "good-1")], cancellationToken: ct);
        var bad = await client.AppendAsync(topic, [Ev(keys[0], "T", "bad-0"), Ev(keys[1], "T", "bad-1")], cancellationToken: ct);

        var first = await client.InvalidateAsync(topic, bad.TransactionId, "bad import", ct);
        Assert.False(first.AlreadyInvalidated);
        Assert.True(first.MarkerTransactionId > bad.TransactionId);
        Assert.Equal(2, first.Markers.Count);
        Assert.Equal([0, 1], first.Markers.Select(m => m.Partition).Order());
        Assert.All(first.Markers, m => Assert.Equal((first.MarkerTransactionId, 3UL, 0UL), (m.TransactionId, m.Sequence, m.KeyVersion)));

        for (var p = 0; p < 2; p++)
        {
            var (events, _, _) = await ReadAllAsync(client, topic, p, Cursors.First, ct);
            Assert.Equal(3, events.Count);
            Assert.False(events[0].TransactionInvalidated);
            Assert.True(events[1].TransactionInvalidated);
            Assert.Equal(("bad-" + p, keys[p]), (events[1].Text(), events[1].Key));
            var marker = events[2];
            Assert.True(marker.IsInvalidationMarker);
            Assert.Equal(EventRecord.InvalidationType, marker.Type);
            Assert.Equal("$invalidation", marker.Type);
            Assert.Equal("", marker.Key);
            Assert.Equal(0UL, marker.KeyVersion);
            Assert.Equal(first.MarkerTransactionId, marker.TransactionId);
            Assert.Equal(new InvalidationMarker(bad.TransactionId, "bad import"), marker.Invalidation);
            Assert.Equal(first.Markers.Single(m => m.Partition == p).Cursor, marker.Cursor);
            Assert.False(events[0].IsInvalidationMarker);
            Assert.False(events[1].IsInvalidationMarker);

            // Markers are sent to a filtered read only when their type is listed.
            var (only, _, _) = await ReadAllAsync(client, topic, p, Cursors.First, ct, new ReadOptions { Types = ["T"] });
            Assert.Equal(2, only.Count);
            var (markers, _, _) = await ReadAllAsync(client, topic, p, Cursors.First, ct, new ReadOptions { Types = [EventRecord.InvalidationType] });
            Assert.True(Assert.Single(markers).IsInvalidationMarker);
        }

        // Invalidating again (even for another reason) changes nothing and returns the first markers.
        var again = await client.InvalidateAsync(topic, bad.TransactionId, "again", ct);
        Assert.True(again.AlreadyInvalidated);
        Assert.Equal(first.MarkerTransactionId, again.MarkerTransactionId);
        Assert.Equal(first.Markers.OrderBy(m => m.Partition), again.Markers.OrderBy(m => m.Partition));
        Assert.Equal(6UL, (await client.GetTopicAsync(topic, ct)).EventCount);

        // ReadKey includes the invalidated event, flagged.
        var history = (await ReadKeyAllAsync(client, topic, keys[0], ct)).SelectMany(p => p.Events).ToList();
        Assert.Equal([false, true], history.Select(e => e.TransactionInvalidated));
        // Surface ignores it: each key falls back to its previous valid event.
        var (surface, _) = await SurfaceAllAsync(client, topic, ct);
        Assert.Equal(keys.Order(StringComparer.Ordinal).Select(k => "good-" + Array.IndexOf(keys, k)), surface.Select(e => e.Text()));
        Assert.All(surface, e => Assert.Equal(good.TransactionId, e.TransactionId));

        // An invalidation cannot be invalidated.
        var undo = await Assert.ThrowsAsync<InvalidArgumentException>(() => client.InvalidateAsync(topic, first.MarkerTransactionId, "undo", ct));
        AssertHubMessage(undo);
    }
}
