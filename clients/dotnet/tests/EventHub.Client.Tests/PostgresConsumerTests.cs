using Npgsql;

namespace EventHub.Client.Tests;

/// <summary>A fresh database, <c>eventhub_test_dotnet_&lt;random&gt;</c>, on the PostgreSQL server of
/// <c>EVENTHUB_TEST_POSTGRES_DSN</c> (nothing when it is unset), holding the table <c>seen</c>;
/// dropped after the tests.</summary>
public sealed class PostgresDatabase : IAsyncLifetime
{
    private string? _admin;

    /// <summary>The database's name.</summary>
    public string? Name { get; private set; }

    /// <summary>An open connection to the database (dispose it).</summary>
    public async Task<NpgsqlConnection> OpenAsync()
    {
        var connection = new NpgsqlConnection(Postgres.ConnectionString(Postgres.Dsn!, Name));
        await connection.OpenAsync();
        return connection;
    }

    public async Task InitializeAsync()
    {
        if (Postgres.Dsn is not { } dsn)
        {
            return;
        }
        _admin = Postgres.ConnectionString(dsn);
        Name = "eventhub_test_dotnet_" + Guid.NewGuid().ToString("N")[..12];
        await using (var admin = new NpgsqlConnection(_admin))
        {
            await admin.OpenAsync();
            await Seen.ExecuteAsync(admin, $"CREATE DATABASE {Name}");
        }
        await using var db = await OpenAsync();
        await Seen.ExecuteAsync(db, Seen.CreateSql);
    }

    public async Task DisposeAsync()
    {
        if (_admin is null || Name is null)
        {
            return;
        }
        await using var admin = new NpgsqlConnection(_admin);
        await admin.OpenAsync();
        await Seen.ExecuteAsync(admin, $"DROP DATABASE IF EXISTS {Name} WITH (FORCE)");
    }
}

/// <summary>The <see cref="Consumer"/> on PostgreSQL through Npgsql: skipped when
/// <c>EVENTHUB_TEST_POSTGRES_DSN</c> is unset, unless <c>EVENTHUB_TEST_REQUIRE_POSTGRES=1</c>.</summary>
[Collection("hub")]
public sealed class PostgresConsumerTests(HubFixture fixture, PostgresDatabase database) : IClassFixture<PostgresDatabase>
{
    private static void RequirePostgres()
    {
        if (Postgres.Dsn is null)
        {
            Assert.False(Postgres.Required, "EVENTHUB_TEST_REQUIRE_POSTGRES=1 but EVENTHUB_TEST_POSTGRES_DSN is not set");
        }
        Skip.If(Postgres.Dsn is null, "EVENTHUB_TEST_POSTGRES_DSN is not set");
    }

    /// <summary>Effects and cursors commit together in PostgreSQL: a failing page is rolled back,
    /// later runs (until caught up, then following) apply every event once, and the stored
    /// cursors end at the heads.</summary>
    [SkippableFact]
    public async Task Consumer_on_postgres_applies_every_event_once_and_rolls_back_a_failing_page()
    {
        RequirePostgres();
        await using var client = fixture.NewClient();
        var topic = Names.Topic("pg");
        await client.CreateTopicAsync(topic, 3);
        await Produce.AppendAsync(client, topic, 0, 60);
        var poison = await client.AppendAsync(topic, new EventData("k0", "Poison", "x"u8.ToArray()));
        await using var connection = await database.OpenAsync();
        await using var reader = await database.OpenAsync();

        var fail = true;
        var record = Seen.Record(topic);
        PageHandler apply = async (page, transaction, cancellationToken) =>
        {
            await record(page, transaction, cancellationToken);
            if (fail && page.Events.Any(e => e.Type == "Poison"))
            {
                throw new InvalidOperationException("poison");
            }
        };
        Consumer NewConsumer() => new(client, connection, new ConsumerOptions { Topic = topic, Group = "pg", MaxEvents = 5 }, apply);

        await Assert.ThrowsAsync<InvalidOperationException>(() => NewConsumer().RunUntilCaughtUpAsync());
        var rows = await Seen.RowsAsync(reader, topic);
        Assert.True(rows.Count < 61, $"{rows.Count} rows after the failed run");
        Assert.DoesNotContain(rows, r => r.Type == "Poison");
        var poisoned = poison.Results[0];
        var heads = await Seen.HeadsAsync(client, topic);
        Assert.NotEqual(heads[poisoned.Partition], (await Seen.CursorsAsync(reader, "pg", topic)).GetValueOrDefault(poisoned.Partition));

        fail = false;
        await NewConsumer().RunUntilCaughtUpAsync();
        await NewConsumer().RunUntilCaughtUpAsync();
        rows = await Seen.RowsAsync(reader, topic);
        Assert.Equal(61, rows.Count);
        Assert.Equal(61, rows.Select(r => (r.Partition, r.Sequence)).Distinct().Count());
        Assert.Equal(heads, await Seen.CursorsAsync(reader, "pg", topic));

        await using (var running = RunningConsumer.Start(NewConsumer()))
        {
            await Produce.AppendAsync(client, topic, 60, 9);
            await Wait.UntilAsync(async () => (await Seen.RowsAsync(reader, topic)).Count >= 70, "70 applied events", running: running.Task);
            await running.StopAsync();
        }
        rows = await Seen.RowsAsync(reader, topic);
        Assert.Equal(70, rows.Count);
        Assert.Equal(70, rows.Select(r => (r.Partition, r.Sequence)).Distinct().Count());
        Assert.Equal(await Seen.HeadsAsync(client, topic), await Seen.CursorsAsync(reader, "pg", topic));
    }

    /// <summary>Two consumers of one group on PostgreSQL, where their transactions overlap: B reads
    /// the first page and holds it in its open transaction; A applies that page and commits; when
    /// B goes on, its cursor write finds the cursor moved (an update) or already inserted (a
    /// partition's first cursor): <see cref="CursorConflictException"/>, and B's effects roll back.</summary>
    [SkippableTheory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Two_consumers_of_one_group_conflict_on_postgres_and_nothing_is_applied_twice(bool stored)
    {
        RequirePostgres();
        await using var client = fixture.NewClient();
        var topic = Names.Topic("pg");
        await client.CreateTopicAsync(topic, 1);
        await using var connectionA = await database.OpenAsync();
        await using var connectionB = await database.OpenAsync();
        await CursorTable.CreateAsync(connectionA);
        if (stored)
        {
            await using var transaction = await connectionA.BeginTransactionAsync();
            await CursorTable.SaveAsync(transaction, "twin", topic, 0, null, Cursors.First);
            await transaction.CommitAsync();
        }
        var first = (await client.AppendAsync(topic, new EventData("k", "T", "1"u8.ToArray()))).Results[0];
        await client.AppendAsync(topic, new EventData("k", "T", "2"u8.ToArray()));
        var options = new ConsumerOptions { Topic = topic, Group = "twin", MaxEvents = 1 };
        var record = Seen.Record(topic);

        // B reads the first page and holds it, in its transaction, unapplied.
        var bHolds = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var releaseB = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var b = RunningConsumer.Start(new Consumer(client, connectionB, options, async (page, transaction, cancellationToken) =>
        {
            Assert.Equal(1UL, page.Events[0].Sequence);
            bHolds.TrySetResult();
            await releaseB.Task.WaitAsync(cancellationToken);
            await record(page, transaction, cancellationToken);
        }));
        await Wait.UntilAsync(() => bHolds.Task.IsCompleted, "B to hold the first page", running: b.Task);

        // A applies the first page: reaching the second means it committed it.
        var aAtSecond = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var a = RunningConsumer.Start(new Consumer(client, connectionA, options, async (page, transaction, cancellationToken) =>
        {
            if (page.Events[0].Sequence == 2)
            {
                aAtSecond.TrySetResult();
                await Task.Delay(Timeout.Infinite, cancellationToken);
            }
            await record(page, transaction, cancellationToken);
        }));
        await Wait.UntilAsync(() => aAtSecond.Task.IsCompleted, "A to commit the first page", running: a.Task);

        // B now applies the first page too, and must fail to commit it.
        releaseB.SetResult();
        var conflict = await Assert.ThrowsAsync<CursorConflictException>(() => b.Task.WaitAsync(TimeSpan.FromSeconds(60)));
        Assert.Contains($"topic '{topic}', partition 0", conflict.Message, StringComparison.Ordinal);
        await a.StopAsync();

        await using var reader = await database.OpenAsync();
        Assert.Equal([1L], (await Seen.RowsAsync(reader, topic)).Select(r => r.Sequence)); // applied once, by A
        Assert.Equal(new Dictionary<int, string> { [0] = first.Cursor }, await Seen.CursorsAsync(reader, "twin", topic));
    }
}
