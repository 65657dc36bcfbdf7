using System.Diagnostics;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using static EventHub.Client.Tests.ClientTestKit;

namespace EventHub.Client.Tests;

/// <summary>Every status the proto documents arrives as its exception type, with the hub's message;
/// a refused request changes nothing.</summary>
[Collection("hub")]
public sealed class ErrorTests(HubFixture fixture)
{
    private static async Task<T> Throws<T>(Func<Task> call, StatusCode code, string? contains = null)
        where T : EventHubException
    {
        var e = await Assert.ThrowsAsync<T>(call);
        Assert.Equal(code, e.StatusCode);
        AssertHubMessage(e, contains);
        Assert.Contains($"({code}): ", e.ToString(), StringComparison.Ordinal);
        return e;
    }

    private static async Task Drain<T>(IAsyncEnumerable<T> stream)
    {
        await foreach (var _ in stream)
        {
        }
    }

    [Fact]
    public async Task Bad_input_throws_InvalidArgumentException_with_the_hubs_message_and_changes_nothing()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        await using var client = fixture.NewClient();
        var topic = Names.Topic("bad");
        var other = Names.Topic("other");
        await client.CreateTopicAsync(topic, 2, ct);
        await client.CreateTopicAsync(other, 2, ct);
        var cursor0 = (await client.AppendAsync(topic, Ev(KeyIn(0, 2), "T", "x"), cancellationToken: ct)).Results[0].Cursor;
        var otherCursor = (await client.AppendAsync(other, Ev(KeyIn(0, 2), "T", "x"), cancellationToken: ct)).Results[0].Cursor;
        var before = await client.GetTopicAsync(topic, ct);

        // Topic names.
        foreach (var (name, says) in new[] { (".hidden", "starts with '.'"), ("$sys", "contains '$'"), ("has space", "contains ' '"), (new string('t', 201), "201 bytes"), ("", "empty") })
        {
            await Throws<InvalidArgumentException>(() => client.AppendAsync(name, Ev("k"), cancellationToken: ct), StatusCode.InvalidArgument, says);
        }
        await Throws<InvalidArgumentException>(() => client.GetTopicAsync("sp ace", ct), StatusCode.InvalidArgument, "sp ace");
        await Throws<InvalidArgumentException>(() => client.CreateTopicAsync(".dot", 1, ct), StatusCode.InvalidArgument, "'.'");

        // Events: reserved, empty or malformed names, duplicate ids, sizes.
        var events = new (string What, EventData[] Events, string Says)[]
        {
            ("no events", [], "events is empty"),
            ("an empty key", [Ev("", "T", "x")], "events[0].key is empty"),
            ("a reserved key", [Ev("$k", "T", "x")], "events[0].key \"$k\" starts with '$'"),
            ("a key over 1024 bytes", [Ev(new string('k', 1025), "T", "x")], "1025 bytes"),
            ("an empty type", [Ev("k", "", "x")], "events[0].type is empty"),
            ("a reserved type", [Ev("k", "$invalidation", "x")], "reserved"),
            ("a bad type", [Ev("k", "has space", "x")], "events[0].type"),
            ("a bad content type", [Ev("k") with { ContentType = "text/\u00e9" }], "content_type"),
            ("an empty header name", [Ev("k") with { Headers = new Dictionary<string, string> { [""] = "v" } }], "header"),
            ("the same id twice", [Ev("a") with { EventId = "dup" }, Ev("b") with { EventId = "dup" }], "events[1].event_id \"dup\" appears twice"),
            ("a NUL in an event id", [Ev("k") with { EventId = "a\0b" }], "NUL"),
            ("an event over 1 MiB", [new EventData("k", "T", new byte[1 << 20])], "1048576"),
        };
        foreach (var (what, bad, says) in events)
        {
            var e = await Assert.ThrowsAsync<InvalidArgumentException>(() => client.AppendAsync(topic, bad, cancellationToken: ct));
            AssertHubMessage(e, says);
            Assert.True(e.StatusCode == StatusCode.InvalidArgument, what);
        }

        // Reads: partition out of range, malformed cursors, cursors of another partition or topic.
        await Throws<InvalidArgumentException>(() => Drain(client.ReadPartitionAsync(topic, 2, cancellationToken: ct)), StatusCode.InvalidArgument, "partition 2 is out of range");
        await Throws<InvalidArgumentException>(() => Drain(client.ReadPartitionAsync(topic, 0, "not a cursor!", cancellationToken: ct)), StatusCode.InvalidArgument, "malformed");
        await Throws<InvalidArgumentException>(() => Drain(client.ReadPartitionAsync(topic, 0, new string('c', 65), cancellationToken: ct)), StatusCode.InvalidArgument, "65 bytes");
        await Throws<InvalidArgumentException>(() => Drain(client.ReadPartitionAsync(topic, 1, cursor0, cancellationToken: ct)), StatusCode.InvalidArgument, "belongs to partition 0, not to partition 1");
        await Throws<InvalidArgumentException>(() => Drain(client.ReadPartitionAsync(topic, 0, otherCursor, cancellationToken: ct)), StatusCode.InvalidArgument, "does not belong to topic");
        await Throws<InvalidArgumentException>(() => Drain(client.FollowAsync(topic, 0, otherCursor, cancellationToken: ct)), StatusCode.InvalidArgument, "does not belong to topic");
        await Throws<InvalidArgumentException>(() => Drain(client.FollowAsync(topic, 5, cancellationToken: ct)), StatusCode.InvalidArgument, "partitions 0 to 1");
        await Throws<InvalidArgumentException>(() => Drain(client.ReadPartitionAsync(topic, 0, options: new ReadOptions { Types = [""] }, cancellationToken: ct)), StatusCode.InvalidArgument, "types");
        await Throws<InvalidArgumentException>(() => Drain(client.ReadKeyAsync(topic, "$k", cancellationToken: ct)), StatusCode.InvalidArgument, "'$'");
        await Throws<InvalidArgumentException>(() => Drain(client.SurfaceAsync(topic, new SurfaceOptions { AsOfTransaction = 999_999 }, ct)), StatusCode.InvalidArgument, "as_of_transaction 999999");

        // Topics and invalidations.
        await Throws<InvalidArgumentException>(() => client.CreateTopicAsync(Names.Topic("many"), 1025, ct), StatusCode.InvalidArgument, "1025");
        await Throws<InvalidArgumentException>(() => client.InvalidateAsync(topic, before.LastTransactionId, "", ct), StatusCode.InvalidArgument);

        // Nothing of it was stored.
        var after = await client.GetTopicAsync(topic, ct);
        Assert.Equal(before, after with { Partitions = before.Partitions });
        Assert.Equal(before.Partitions, after.Partitions);
        Assert.Equal(1UL, after.EventCount);
        var (events1, _, _) = await ReadAllAsync(client, topic, 0, Cursors.First, ct);
        Assert.Single(events1);
    }

    [Fact]
    public async Task Unknown_topics_and_transactions_throw_NotFoundException()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        await using var client = fixture.NewClient();
        var topic = Names.Topic("known");
        await client.AppendAsync(topic, Ev("k"), cancellationToken: ct);
        var missing = Names.Topic("missing");

        await Throws<NotFoundException>(() => client.GetTopicAsync(missing, ct), StatusCode.NotFound, $"topic \"{missing}\" does not exist");
        await Throws<NotFoundException>(() => Drain(client.ReadPartitionAsync(missing, 0, cancellationToken: ct)), StatusCode.NotFound, missing);
        await Throws<NotFoundException>(() => Drain(client.FollowAsync(missing, 0, cancellationToken: ct)), StatusCode.NotFound, missing);
        await Throws<NotFoundException>(() => Drain(client.SurfaceAsync(missing, cancellationToken: ct)), StatusCode.NotFound, missing);
        await Throws<NotFoundException>(() => Drain(client.ReadKeyAsync(missing, "k", cancellationToken: ct)), StatusCode.NotFound, missing);
        await Throws<NotFoundException>(() => client.InvalidateAsync(missing, 1, "why", ct), StatusCode.NotFound, missing);
        await Throws<NotFoundException>(() => client.InvalidateAsync(topic, 999_999, "no such transaction", ct), StatusCode.NotFound, "999999");

        // Neither a read nor an invalidation created anything.
        await Throws<NotFoundException>(() => client.GetTopicAsync(missing, ct), StatusCode.NotFound);
        Assert.Equal(1UL, (await client.GetTopicAsync(topic, ct)).EventCount);
    }

    [Fact]
    public async Task CreateTopic_with_another_partition_count_throws_AlreadyExistsException()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        await using var client = fixture.NewClient();
        var topic = Names.Topic("exists");
        await client.CreateTopicAsync(topic, 2, ct);

        await Throws<AlreadyExistsException>(() => client.CreateTopicAsync(topic, 3, ct), StatusCode.AlreadyExists, topic);
        // A topic auto-created by Append has the default count.
        var auto = Names.Topic("auto");
        await client.AppendAsync(auto, Ev("k"), cancellationToken: ct);
        await Throws<AlreadyExistsException>(() => client.CreateTopicAsync(auto, 1, ct), StatusCode.AlreadyExists, auto);

        Assert.Equal(2, (await client.GetTopicAsync(topic, ct)).PartitionCount);
        Assert.False((await client.CreateTopicAsync(topic, 2, ct)).Created);
    }

    [Fact]
    public async Task Too_many_events_in_one_Append_throw_ResourceExhaustedException()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        await using var client = fixture.NewClient();
        var topic = Names.Topic("many");
        await client.CreateTopicAsync(topic, 1, ct);

        await Throws<ResourceExhaustedException>(
            () => client.AppendAsync(topic, Enumerable.Range(0, 10_001).Select(_ => Ev("k", "T", "x")), cancellationToken: ct),
            StatusCode.ResourceExhausted,
            "the Append has 10001 events; the limit is 10000");
        Assert.Equal(0UL, (await client.GetTopicAsync(topic, ct)).EventCount);
        // The limit itself is fine.
        var ok = await client.AppendAsync(topic, Enumerable.Range(0, 10_000).Select(_ => Ev("k", "T", "x")), cancellationToken: ct);
        Assert.Equal(10_000, ok.Results.Count);
    }

    [Fact]
    public async Task Key_version_conflict_decodes_the_key_and_actual_version_from_the_trailers()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        await using var client = fixture.NewClient();
        var topic = Names.Topic("conflict");
        const string key = "ключ 1";
        await client.AppendAsync(topic, Ev(key, payload: "1") with { Expected = ExpectedVersion.NoKey }, cancellationToken: ct);

        var e = await Throws<KeyVersionConflictException>(
            () => client.AppendAsync(topic, Ev(key, payload: "2") with { Expected = ExpectedVersion.NoKey }, cancellationToken: ct),
            StatusCode.FailedPrecondition);
        Assert.Equal(key, e.Key);
        Assert.Equal(1UL, e.ActualVersion);
        Assert.Equal("%D0%BA%D0%BB%D1%8E%D1%87%201", e.Trailers.GetValue("eventhub-key"));
        Assert.Equal("1", e.Trailers.GetValue("eventhub-actual-version"));

        // '%' itself is escaped, and decoded back.
        const string percent = "50% off";
        await client.AppendAsync(topic, Ev(percent), cancellationToken: ct);
        await client.AppendAsync(topic, Ev(percent), cancellationToken: ct);
        var p = await Throws<KeyVersionConflictException>(
            () => client.AppendAsync(topic, Ev(percent) with { Expected = ExpectedVersion.Exact(1) }, cancellationToken: ct),
            StatusCode.FailedPrecondition);
        Assert.Equal((percent, 2UL), (p.Key, p.ActualVersion));
        Assert.Equal("50%25%20off", p.Trailers.GetValue("eventhub-key"));

        // Nothing was stored by the refused appends.
        var history = await ReadKeyAllAsync(client, topic, key, ct);
        Assert.Equal(1UL, history[0].CurrentVersion);
        Assert.Equal(3UL, (await client.GetTopicAsync(topic, ct)).EventCount);
    }

    [Fact]
    public async Task A_request_over_the_hubs_total_size_throws_OutOfRangeException()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        await using var hub = await Hub.StartAsync(extra: ["--max-request-bytes", "2000"]);
        await using var client = new EventHubClient(hub.Address);
        var topic = Names.Topic("size");
        await client.CreateTopicAsync(topic, 1, ct);

        await Throws<OutOfRangeException>(() => client.AppendAsync(topic, new EventData("k", "T", new byte[5000]), cancellationToken: ct), StatusCode.OutOfRange, "2000");
        Assert.Equal(0UL, (await client.GetTopicAsync(topic, ct)).EventCount);
        // Under the limit all is well.
        await client.AppendAsync(topic, new EventData("k", "T", new byte[500]), cancellationToken: ct);
        Assert.Equal(1UL, (await client.GetTopicAsync(topic, ct)).EventCount);
        Assert.Equal(0, await hub.StopAsync());
    }

    [Fact]
    public async Task A_cursor_past_the_end_of_a_database_that_lost_events_throws_OutOfRangeException()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        var dir = Hub.NewDirectory();
        var topic = Names.Topic("lost");
        var db = Path.Combine(dir, "hub.db");
        var copy = Path.Combine(dir, "copy.db");

        // A database with one event, stopped cleanly (the SQLite file alone holds it), and copied.
        string kept;
        await using (var hub = await Hub.StartAsync(dir))
        {
            await using var client = new EventHubClient(hub.Address);
            await client.CreateTopicAsync(topic, 1, ct);
            kept = (await client.AppendAsync(topic, Ev("k", payload: "1"), cancellationToken: ct)).Results[0].Cursor;
            Assert.Equal(0, await hub.StopAsync());
        }
        File.Copy(db, copy);

        // Two more events; their cursors are handed out.
        string lost;
        await using (var hub = await Hub.StartAsync(dir))
        {
            await using var client = new EventHubClient(hub.Address);
            lost = (await client.AppendAsync(topic, [Ev("k", payload: "2"), Ev("k", payload: "3")], cancellationToken: ct)).Results[1].Cursor;
            Assert.Equal(0, await hub.StopAsync());
        }

        // The database restored from the copy has lost them.
        File.Copy(copy, db, overwrite: true);
        File.Delete(db + "-wal");
        File.Delete(db + "-shm");
        await using (var hub = await Hub.StartAsync(dir))
        {
            await using var client = new EventHubClient(hub.Address);
            Assert.Equal(1UL, (await client.GetTopicAsync(topic, ct)).EventCount);
            await Throws<OutOfRangeException>(() => Drain(client.ReadPartitionAsync(topic, 0, lost, cancellationToken: ct)), StatusCode.OutOfRange, "lost events");
            // Not retried, not waited on: a follow stream fails the same way at once.
            var started = Stopwatch.StartNew();
            await Throws<OutOfRangeException>(() => Drain(client.FollowAsync(topic, 0, lost, cancellationToken: ct)), StatusCode.OutOfRange, "partition ends at event 1");
            Assert.True(started.Elapsed < TimeSpan.FromSeconds(5), $"the follow failed after {started.Elapsed}");
            // A cursor at or before the end still reads.
            var (events, cursor, _) = await ReadAllAsync(client, topic, 0, kept, ct);
            Assert.Empty(events);
            Assert.Equal(kept, cursor);
            Assert.Equal(0, await hub.StopAsync());
        }
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public async Task An_unreachable_hub_throws_UnavailableException_after_the_retries()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        var log = new LogRecorder();
        using var loggers = LoggerFactory.Create(b => b.AddProvider(log).SetMinimumLevel(LogLevel.Debug));
        await using var client = new EventHubClient(new EventHubClientSettings
        {
            Address = $"127.0.0.1:{FreePort()}",
            Retry = new RetryPolicy { MaxAttempts = 3, InitialBackoff = TimeSpan.FromMilliseconds(10), MaxBackoff = TimeSpan.FromMilliseconds(20) },
            LoggerFactory = loggers,
        });

        var started = Stopwatch.StartNew();
        await Throws<UnavailableException>(() => client.GetTopicAsync("t", ct), StatusCode.Unavailable);
        Assert.Equal(3, log.Attempts("GetTopic"));
        await Throws<UnavailableException>(() => client.ListTopicsAsync(cancellationToken: ct).GetAsyncEnumerator(ct).MoveNextAsync().AsTask(), StatusCode.Unavailable);
        Assert.Equal(3, log.Attempts("ListTopics"));
        await Throws<UnavailableException>(() => client.CreateTopicAsync("t", 1, ct), StatusCode.Unavailable);
        Assert.Equal(3, log.Attempts("CreateTopic"));
        await Throws<UnavailableException>(() => client.InvalidateAsync("t", 1, "why", ct), StatusCode.Unavailable);
        Assert.Equal(3, log.Attempts("Invalidate"));
        // Streams too: reads, follows, surfaces and key histories.
        await Throws<UnavailableException>(() => Drain(client.ReadPartitionAsync("t", 0, cancellationToken: ct)), StatusCode.Unavailable);
        Assert.Equal(3, log.Attempts("ReadPartition"));
        await Throws<UnavailableException>(() => Drain(client.FollowAsync("t", 0, cancellationToken: ct)), StatusCode.Unavailable);
        Assert.Equal(6, log.Attempts("ReadPartition"));
        await Throws<UnavailableException>(() => Drain(client.SurfaceAsync("t", cancellationToken: ct)), StatusCode.Unavailable);
        Assert.Equal(3, log.Attempts("Surface"));
        await Throws<UnavailableException>(() => Drain(client.ReadKeyAsync("t", "k", cancellationToken: ct)), StatusCode.Unavailable);
        Assert.Equal(3, log.Attempts("ReadKey"));
        // An Append is retried only when every event has an event id.
        await Throws<UnavailableException>(() => client.AppendAsync("t", Ev("k") with { EventId = "e-1" }, cancellationToken: ct), StatusCode.Unavailable);
        Assert.Equal(3, log.Attempts("Append"));
        await Throws<UnavailableException>(() => client.AppendAsync("t", [Ev("k") with { EventId = "e-2" }, Ev("k")], cancellationToken: ct), StatusCode.Unavailable);
        Assert.Equal(4, log.Attempts("Append"));
        Assert.True(started.Elapsed < TimeSpan.FromSeconds(30), $"giving up took {started.Elapsed}");

        // A policy without retries fails at the first try.
        await using var once = new EventHubClient(client.Settings with { Retry = RetryPolicy.None });
        await Throws<UnavailableException>(() => once.GetTopicAsync("t", ct), StatusCode.Unavailable);
        Assert.Equal(4, log.Attempts("GetTopic"));
        await Throws<UnavailableException>(() => Drain(client.ReadPartitionAsync("t", 0, options: new ReadOptions { Retry = RetryPolicy.None }, cancellationToken: ct)), StatusCode.Unavailable);
        Assert.Equal(7, log.Attempts("ReadPartition"));
    }
}
