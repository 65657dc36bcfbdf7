namespace EventHub.Client.Tests;

/// <summary>The <see cref="Consumer"/> in process, on SQLite, against the shared hub.</summary>
[Collection("hub")]
public sealed class ConsumerTests(HubFixture fixture)
{
    private const string Group = "test-group";

    private static Consumer NewConsumer(EventHubClient client, SqliteProjection db, string topic, ConsumerOptions? options = null, PageHandler? handler = null) =>
        new(client, db.Connection, (options ?? new ConsumerOptions { Topic = topic, Group = Group, MaxEvents = 7 }) with { Topic = topic }, handler ?? Seen.Record(topic));

    [Fact]
    public async Task Applies_every_event_once_across_runs_and_stores_the_heads()
    {
        await using var client = fixture.NewClient();
        await using var db = await SqliteProjection.CreateAsync();
        var topic = Names.Topic();
        await client.CreateTopicAsync(topic, 3);
        await Produce.AppendAsync(client, topic, 0, 100);

        await NewConsumer(client, db, topic).RunUntilCaughtUpAsync();
        Assert.Equal(100, await db.CountAsync(topic));
        // A second run starts from the stored cursors: nothing to do.
        await NewConsumer(client, db, topic).RunUntilCaughtUpAsync();
        Assert.Equal(100, await db.CountAsync(topic));

        await Produce.AppendAsync(client, topic, 100, 20);
        await NewConsumer(client, db, topic).RunUntilCaughtUpAsync();
        var rows = await db.RowsAsync(topic);
        Assert.Equal(Produce.Keys(0, 120).Order(), rows.Select(r => r.Key).Order());
        Assert.Equal(120, rows.Select(r => (r.Partition, r.Sequence)).Distinct().Count());
        Assert.Equal(await Seen.HeadsAsync(client, topic), await db.CursorsAsync(Group, topic));
    }

    [Fact]
    public async Task Handler_failure_rolls_back_its_page_and_cursor_and_the_run_throws_it()
    {
        await using var client = fixture.NewClient();
        await using var db = await SqliteProjection.CreateAsync();
        var topic = Names.Topic();
        await client.CreateTopicAsync(topic, 1);
        var healthy = await Produce.AppendAsync(client, topic, 0, 5);
        await Produce.AppendAsync(client, topic, 5, 1, type: "Poison");

        var record = Seen.Record(topic);
        PageHandler fragile = async (page, transaction, cancellationToken) =>
        {
            await record(page, transaction, cancellationToken);
            if (page.Events.Any(e => e.Type == "Poison"))
            {
                throw new InvalidOperationException("cannot handle poison");
            }
        };
        var options = new ConsumerOptions { Topic = topic, Group = Group, MaxEvents = 3 };
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => NewConsumer(client, db, topic, options, fragile).RunUntilCaughtUpAsync());
        Assert.Equal("cannot handle poison", error.Message);

        // The first page (events 1-3) committed; the second (4-6, with the poison) did not, nor its cursor.
        Assert.Equal([1L, 2, 3], (await db.RowsAsync(topic)).Select(r => r.Sequence));
        Assert.Equal(new Dictionary<int, string> { [0] = healthy.Results[2].Cursor }, await db.CursorsAsync(Group, topic));

        // The same in follow mode: RunAsync throws it too.
        await Assert.ThrowsAsync<InvalidOperationException>(() => NewConsumer(client, db, topic, options, fragile).RunAsync().WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal(3, await db.CountAsync(topic));

        await NewConsumer(client, db, topic).RunUntilCaughtUpAsync();
        Assert.Equal([1L, 2, 3, 4, 5, 6], (await db.RowsAsync(topic)).Select(r => r.Sequence));
    }

    [Fact]
    public async Task Start_last_skips_history_but_not_what_follows()
    {
        await using var client = fixture.NewClient();
        await using var db = await SqliteProjection.CreateAsync();
        var topic = Names.Topic();
        await client.CreateTopicAsync(topic, 2);
        await Produce.AppendAsync(client, topic, 0, 10);
        var last = new ConsumerOptions { Topic = topic, Group = Group, Start = ConsumerStart.Last };

        await NewConsumer(client, db, topic, last).RunUntilCaughtUpAsync();
        Assert.Empty(await db.RowsAsync(topic));
        // The head as of the first run is stored at once, so the next run does not skip ahead.
        Assert.Equal(await Seen.HeadsAsync(client, topic), await db.CursorsAsync(Group, topic));

        await Produce.AppendAsync(client, topic, 10, 6);
        await NewConsumer(client, db, topic, last).RunUntilCaughtUpAsync();
        Assert.Equal(Produce.Keys(10, 6).Order(), (await db.RowsAsync(topic)).Select(r => r.Key).Order());
    }

    [Fact]
    public async Task Reads_only_the_chosen_partitions_and_types()
    {
        await using var client = fixture.NewClient();
        await using var db = await SqliteProjection.CreateAsync();
        var topic = Names.Topic();
        await client.CreateTopicAsync(topic, 4);
        await Produce.AppendAsync(client, topic, 0, 40, type: "A");
        await Produce.AppendAsync(client, topic, 40, 40, type: "B");

        var options = new ConsumerOptions { Topic = topic, Group = Group, MaxEvents = 7, Partitions = [1, 3], Types = ["B"] };
        await NewConsumer(client, db, topic, options).RunUntilCaughtUpAsync();

        var expected = Produce.Keys(40, 40).Where(k => Partition.For(k, 4) is 1 or 3).Order().ToList();
        Assert.NotEmpty(expected);
        Assert.Equal(expected, (await db.RowsAsync(topic)).Select(r => r.Key).Order());
        // Only the chosen partitions have cursors, and the skipped events of other types advanced them.
        var heads = await Seen.HeadsAsync(client, topic);
        Assert.Equal(new Dictionary<int, string> { [1] = heads[1], [3] = heads[3] }, await db.CursorsAsync(Group, topic));
    }

    [Fact]
    public async Task Types_filter_still_delivers_invalidation_markers()
    {
        await using var client = fixture.NewClient();
        await using var db = await SqliteProjection.CreateAsync();
        var topic = Names.Topic();
        await client.CreateTopicAsync(topic, 1);
        await Produce.AppendAsync(client, topic, 0, 2, type: "A");
        var bad = await Produce.AppendAsync(client, topic, 2, 1, type: "B");
        await client.InvalidateAsync(topic, bad.TransactionId, "wrong");

        var markers = new List<InvalidationMarker>();
        var record = Seen.Record(topic);
        PageHandler handler = async (page, transaction, cancellationToken) =>
        {
            markers.AddRange(page.Events.Where(e => e.IsInvalidationMarker).Select(e => e.Invalidation!));
            await record(page, transaction, cancellationToken);
        };
        IReadOnlyCollection<string> types = ["A"];
        var options = new ConsumerOptions { Topic = topic, Group = Group, Types = types };
        await NewConsumer(client, db, topic, options, handler).RunUntilCaughtUpAsync();

        Assert.Equal(["A", "A", EventRecord.InvalidationType], (await db.RowsAsync(topic)).Select(r => r.Type));
        Assert.Equal([new InvalidationMarker(bad.TransactionId, "wrong")], markers);
        Assert.Equal(["A"], types); // the consumer asked for the markers without changing the options
    }

    [Fact]
    public async Task Follows_as_events_commit_and_stops_when_its_token_is_cancelled()
    {
        await using var client = fixture.NewClient();
        await using var db = await SqliteProjection.CreateAsync();
        var topic = Names.Topic();
        await client.CreateTopicAsync(topic, 2);
        var options = new ConsumerOptions { Topic = topic, Group = Group, MaxEvents = 7, Heartbeat = TimeSpan.FromMilliseconds(200) };

        await using (var running = RunningConsumer.Start(NewConsumer(client, db, topic, options)))
        {
            for (var batch = 0; batch < 5; batch++)
            {
                await Produce.AppendAsync(client, topic, batch * 10, 10);
            }
            await Wait.UntilAsync(async () => await db.CountAsync(topic) >= 50, "50 applied events", running: running.Task);
            await running.StopAsync(); // returns without an error
        }
        Assert.Equal(50, await db.CountAsync(topic));

        // Stopped, it applies nothing; started again, it goes on from its cursors.
        await Produce.AppendAsync(client, topic, 50, 10);
        Assert.Equal(50, await db.CountAsync(topic));
        await using (var running = RunningConsumer.Start(NewConsumer(client, db, topic, options)))
        {
            await Wait.UntilAsync(async () => await db.CountAsync(topic) >= 60, "60 applied events", running: running.Task);
            await running.StopAsync();
        }
        var rows = await db.RowsAsync(topic);
        Assert.Equal(Produce.Keys(0, 60).Order(), rows.Select(r => r.Key).Order());
        Assert.Equal(await Seen.HeadsAsync(client, topic), await db.CursorsAsync(Group, topic));
    }

    [Fact]
    public async Task Unknown_topic_throws_NotFoundException()
    {
        await using var client = fixture.NewClient();
        await using var db = await SqliteProjection.CreateAsync();
        var topic = Names.Topic("missing");
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));

        await Assert.ThrowsAsync<NotFoundException>(() => NewConsumer(client, db, topic).RunUntilCaughtUpAsync(timeout.Token));
        await Assert.ThrowsAsync<NotFoundException>(() => NewConsumer(client, db, topic).RunAsync(timeout.Token));
        // With partitions named, the consumer does not look the topic up: the reads fail.
        var named = new ConsumerOptions { Topic = topic, Group = Group, Partitions = [0, 1] };
        await Assert.ThrowsAsync<NotFoundException>(() => NewConsumer(client, db, topic, named).RunUntilCaughtUpAsync(timeout.Token));
        await Assert.ThrowsAsync<NotFoundException>(() => NewConsumer(client, db, topic, named).RunAsync(timeout.Token));
        Assert.False(timeout.IsCancellationRequested);
        Assert.Empty(await db.CursorsAsync(Group, topic));
    }

    [Fact]
    public async Task An_empty_partitions_list_is_refused_and_null_reads_them_all()
    {
        await using var client = fixture.NewClient();
        await using var db = await SqliteProjection.CreateAsync();
        var topic = Names.Topic();
        await client.CreateTopicAsync(topic, 2);
        await Produce.AppendAsync(client, topic, 0, 10);

        var error = Assert.Throws<ArgumentException>(() => NewConsumer(client, db, topic, new ConsumerOptions { Topic = topic, Group = Group, Partitions = [] }));
        Assert.Contains("Partitions", error.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => NewConsumer(client, db, topic, new ConsumerOptions { Topic = topic, Group = Group, Partitions = [-1] }));

        await NewConsumer(client, db, topic, new ConsumerOptions { Topic = topic, Group = Group, Partitions = null }).RunUntilCaughtUpAsync();
        Assert.Equal(10, await db.CountAsync(topic));
    }

    [Fact]
    public async Task A_partition_listed_twice_is_read_once()
    {
        await using var client = fixture.NewClient();
        await using var db = await SqliteProjection.CreateAsync();
        var topic = Names.Topic();
        await client.CreateTopicAsync(topic, 2);
        await Produce.AppendAsync(client, topic, 0, 30);

        var options = new ConsumerOptions { Topic = topic, Group = Group, MaxEvents = 1, Partitions = [1, 1, 1] };
        await NewConsumer(client, db, topic, options).RunUntilCaughtUpAsync();
        var expected = Produce.Keys(0, 30).Where(k => Partition.For(k, 2) == 1).Order().ToList();
        Assert.NotEmpty(expected);
        Assert.Equal(expected, (await db.RowsAsync(topic)).Select(r => r.Key).Order());
    }

    /// <summary>Two consumers of one group follow the same partition (replicas, or the old and new
    /// instance of a rolling deploy). On SQLite their transactions take turns, so the one that comes
    /// second to a page finds the cursor moved: it gets <see cref="CursorConflictException"/>, its
    /// page is rolled back, and every event is applied once. With no cursor stored yet, the second
    /// one's insert conflicts the same way (rather than failing on the primary key).</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Two_consumers_of_one_group_conflict_and_nothing_is_applied_twice(bool stored)
    {
        await using var client = fixture.NewClient();
        await using var dbA = await SqliteProjection.CreateAsync();
        await using var dbB = dbA.NewConnection();
        await dbB.OpenAsync();
        var topic = Names.Topic();
        await client.CreateTopicAsync(topic, 3);
        await CursorTable.CreateAsync(dbA.Connection);
        var keys = Enumerable.Range(0, 3).Select(p => Enumerable.Range(0, 100).Select(i => $"k{i}").First(k => Partition.For(k, 3) == p)).ToArray();
        if (stored)
        {
            await client.AppendAsync(topic, new EventData(keys[0], "T", "1"u8.ToArray()));
            await NewConsumer(client, dbA, topic, new ConsumerOptions { Topic = topic, Group = Group, Partitions = [0] }).RunUntilCaughtUpAsync();
        }
        var stored0 = (await dbA.CursorsAsync(Group, topic)).GetValueOrDefault(0);

        // A reads partitions 0 and 1, B partitions 0 and 2: an event on 1 (2) shows that A (B) has
        // loaded its cursors; partition 0 is the one they share.
        // A heartbeat would store partition 0's cursor as well: keep them out of the way.
        ConsumerOptions Options(params int[] partitions) =>
            new() { Topic = topic, Group = Group, MaxEvents = 1, Partitions = partitions, Heartbeat = TimeSpan.FromMinutes(1) };
        await using var a = RunningConsumer.Start(new Consumer(client, dbA.Connection, Options(0, 1), Seen.Record(topic)));
        await using var b = RunningConsumer.Start(new Consumer(client, dbB, Options(0, 2), Seen.Record(topic)));
        await client.AppendAsync(topic, [new EventData(keys[1], "T", "a"u8.ToArray()), new EventData(keys[2], "T", "b"u8.ToArray())]);
        await Wait.UntilAsync(async () => (await dbA.RowsAsync(topic)).Count(r => r.Partition != 0) == 2, "A and B to apply their own partitions' events");
        Assert.Equal(stored0, (await dbA.CursorsAsync(Group, topic)).GetValueOrDefault(0)); // neither moved partition 0 yet

        var contested = await client.AppendAsync(topic, Enumerable.Range(0, 5).Select(i => new EventData(keys[0], "T", "c"u8.ToArray())));
        var heads = await Seen.HeadsAsync(client, topic);
        await Wait.UntilAsync(() => a.Task.IsCompleted || b.Task.IsCompleted, "one of the two consumers to fail");
        var (loser, winner) = a.Task.IsCompleted ? (a, b) : (b, a);
        var conflict = await Assert.ThrowsAsync<CursorConflictException>(() => loser.Task);
        Assert.Contains("partition 0", conflict.Message, StringComparison.Ordinal);
        await Wait.UntilAsync(async () => (await dbA.CursorsAsync(Group, topic)).GetValueOrDefault(0) == heads[0], "the winner to apply partition 0 up to its head", running: winner.Task);
        await winner.StopAsync();

        var rows = await dbA.RowsAsync(topic);
        var partition0 = rows.Where(r => r.Partition == 0).Select(r => r.Sequence).ToList();
        Assert.Equal(Enumerable.Range(1, (stored ? 1 : 0) + contested.Results.Count).Select(s => (long)s), partition0);
        Assert.Equal(rows.Count, rows.Select(r => (r.Partition, r.Sequence)).Distinct().Count());
        Assert.Equal(heads, await dbA.CursorsAsync(Group, topic));
    }
}
