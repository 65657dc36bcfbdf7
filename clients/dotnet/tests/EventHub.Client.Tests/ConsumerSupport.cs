using System.Collections.Concurrent;
using System.Data.Common;
using System.Globalization;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace EventHub.Client.Tests;

/// <summary>One applied event, as the tests' projections store it.</summary>
internal sealed record SeenRow(int Partition, long Sequence, string Key, string Type);

/// <summary>The tests' projection: a table <c>seen</c> with one row per applied event and no
/// unique key, so that an event applied twice shows as two rows. The same SQL runs on SQLite and
/// PostgreSQL; rows carry their topic, so one database can hold the projections of many tests.</summary>
internal static class Seen
{
    internal const string CreateSql = """
        CREATE TABLE IF NOT EXISTS seen (
            topic TEXT NOT NULL,
            "partition" INTEGER NOT NULL,
            sequence BIGINT NOT NULL,
            key TEXT NOT NULL,
            type TEXT NOT NULL
        )
        """;

    /// <summary>A <see cref="PageHandler"/> inserting every event of the page into <c>seen</c>,
    /// through the consumer's transaction.</summary>
    internal static PageHandler Record(string topic) => async (page, transaction, cancellationToken) =>
    {
        foreach (var e in page.Events)
        {
            await using var insert = Command(transaction, """INSERT INTO seen (topic, "partition", sequence, key, type) VALUES (@topic, @partition, @sequence, @key, @type)""");
            Add(insert, "topic", topic);
            Add(insert, "partition", e.Partition);
            Add(insert, "sequence", checked((long)e.Sequence));
            Add(insert, "key", e.Key);
            Add(insert, "type", e.Type);
            await insert.ExecuteNonQueryAsync(cancellationToken);
        }
    };

    /// <summary>The rows of <paramref name="topic"/>, by partition and sequence.</summary>
    internal static async Task<List<SeenRow>> RowsAsync(DbConnection connection, string topic)
    {
        await using var select = connection.CreateCommand();
        select.CommandText = """SELECT "partition", sequence, key, type FROM seen WHERE topic = @topic ORDER BY "partition", sequence""";
        Add(select, "topic", topic);
        var rows = new List<SeenRow>();
        await using var reader = await select.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            rows.Add(new SeenRow(Convert.ToInt32(reader.GetValue(0), CultureInfo.InvariantCulture), Convert.ToInt64(reader.GetValue(1), CultureInfo.InvariantCulture), reader.GetString(2), reader.GetString(3)));
        }
        return rows;
    }

    /// <summary>The cursors stored by <paramref name="group"/> for <paramref name="topic"/>, by partition.</summary>
    internal static async Task<Dictionary<int, string>> CursorsAsync(DbConnection connection, string group, string topic)
    {
        await using var select = connection.CreateCommand();
        select.CommandText = """SELECT "partition", "cursor" FROM eventhub_cursors WHERE consumer = @consumer AND topic = @topic""";
        Add(select, "consumer", group);
        Add(select, "topic", topic);
        var cursors = new Dictionary<int, string>();
        await using var reader = await select.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            cursors[Convert.ToInt32(reader.GetValue(0), CultureInfo.InvariantCulture)] = reader.GetString(1);
        }
        return cursors;
    }

    /// <summary>The head cursor of every partition of <paramref name="topic"/>.</summary>
    internal static async Task<Dictionary<int, string>> HeadsAsync(EventHubClient client, string topic) =>
        (await client.GetTopicAsync(topic)).Partitions.ToDictionary(p => p.Partition, p => p.HeadCursor);

    internal static async Task ExecuteAsync(DbConnection connection, string sql)
    {
        await using var command = connection.CreateCommand();
#pragma warning disable CA2100 // The tests' own constant SQL.
        command.CommandText = sql;
#pragma warning restore CA2100
        await command.ExecuteNonQueryAsync();
    }

    private static DbCommand Command(DbTransaction transaction, string sql)
    {
        var command = transaction.Connection!.CreateCommand();
        command.Transaction = transaction;
#pragma warning disable CA2100 // The tests' own constant SQL.
        command.CommandText = sql;
#pragma warning restore CA2100
        return command;
    }

    private static void Add(DbCommand command, string name, object value)
    {
        var parameter = command.CreateParameter();
        parameter.ParameterName = "@" + name;
        parameter.Value = value;
        command.Parameters.Add(parameter);
    }
}

/// <summary>A SQLite file in a directory of its own holding the table <c>seen</c>, with an open
/// connection for a consumer (<see cref="Connection"/>) and fresh connections for the test to
/// read from meanwhile (WAL, so reading never waits for the consumer).</summary>
internal sealed class SqliteProjection : IAsyncDisposable
{
    private SqliteProjection(string directory, SqliteConnection connection)
    {
        Directory = directory;
        Connection = connection;
    }

    public string Directory { get; }

    public string Path => System.IO.Path.Combine(Directory, "projection.db");

    /// <summary>The consumer's connection (open; used by nothing else while a consumer runs).</summary>
    public SqliteConnection Connection { get; }

    public static async Task<SqliteProjection> CreateAsync()
    {
        var directory = Hub.NewDirectory();
        var connection = Open(System.IO.Path.Combine(directory, "projection.db"));
        await connection.OpenAsync();
        await Seen.ExecuteAsync(connection, "PRAGMA journal_mode = WAL");
        await Seen.ExecuteAsync(connection, Seen.CreateSql);
        return new SqliteProjection(directory, connection);
    }

    /// <summary>Another connection to the same file (open it, dispose it).</summary>
    public SqliteConnection NewConnection() => Open(Path);

    public async Task<List<SeenRow>> RowsAsync(string topic)
    {
        await using var reader = NewConnection();
        await reader.OpenAsync();
        return await Seen.RowsAsync(reader, topic);
    }

    public async Task<int> CountAsync(string topic) => (await RowsAsync(topic)).Count;

    public async Task<Dictionary<int, string>> CursorsAsync(string group, string topic)
    {
        await using var reader = NewConnection();
        await reader.OpenAsync();
        return await Seen.CursorsAsync(reader, group, topic);
    }

    public async ValueTask DisposeAsync()
    {
        await Connection.DisposeAsync();
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
            // A temporary directory; leaving it behind is harmless.
        }
    }

    internal static SqliteConnection Open(string path) =>
        new(new SqliteConnectionStringBuilder { DataSource = path, Pooling = false }.ToString());
}

/// <summary>A consumer's <see cref="Consumer.RunAsync(CancellationToken)"/> (or
/// <see cref="Consumer.RunUntilCaughtUpAsync"/>) on a task of its own.</summary>
internal sealed class RunningConsumer : IAsyncDisposable
{
    private readonly CancellationTokenSource _stop = new();

    private RunningConsumer(Func<CancellationToken, Task> run) => Task = System.Threading.Tasks.Task.Run(() => run(_stop.Token));

    /// <summary>The run; it ends when stopped, or with the error that ended it.</summary>
    public Task Task { get; }

    public static RunningConsumer Start(Consumer consumer) => new(consumer.RunAsync);

    public static RunningConsumer StartUntilCaughtUp(Consumer consumer) => new(consumer.RunUntilCaughtUpAsync);

    /// <summary>Cancels the run and waits (at most 20 s) for it to return; throws what it threw.</summary>
    public async Task StopAsync()
    {
        await _stop.CancelAsync();
        await Task.WaitAsync(TimeSpan.FromSeconds(20));
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        try
        {
            await Task.WaitAsync(TimeSpan.FromSeconds(20));
        }
        catch (Exception)
        {
            // Disposing only makes sure the run is over; the test asserts on its outcome.
        }
        _stop.Dispose();
    }
}

/// <summary>Bounded polling of a condition (never a fixed sleep for synchronisation).</summary>
internal static class Wait
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(60);

    /// <summary>Polls <paramref name="condition"/> until it holds; fails after
    /// <paramref name="timeout"/>, or at once if <paramref name="running"/> ends first, with
    /// what <paramref name="diagnostics"/> says.</summary>
    public static async Task UntilAsync(Func<Task<bool>> condition, string what, TimeSpan? timeout = null, Task? running = null, Func<string>? diagnostics = null)
    {
        var limit = timeout ?? DefaultTimeout;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (!await condition())
        {
            if (running is { IsCompleted: true })
            {
                if (!running.IsCompletedSuccessfully)
                {
                    throw new InvalidOperationException($"waiting for {what}: the consumer's run failed\n{diagnostics?.Invoke()}", running.Exception?.InnerException);
                }
                Assert.Fail($"waiting for {what}: the consumer's run returned\n{diagnostics?.Invoke()}");
            }
            if (clock.Elapsed > limit)
            {
                Assert.Fail($"timed out after {limit.TotalSeconds:0}s waiting for {what}\n{diagnostics?.Invoke()}");
            }
            await Task.Delay(10);
        }
    }

    public static Task UntilAsync(Func<bool> condition, string what, TimeSpan? timeout = null, Task? running = null, Func<string>? diagnostics = null) =>
        UntilAsync(() => Task.FromResult(condition()), what, timeout, running, diagnostics);
}

/// <summary>Appends the tests' events: key <c>k{i}</c> for event number i.</summary>
internal static class Produce
{
    public static Task<AppendResult> AppendAsync(EventHubClient client, string topic, int start, int count, string type = "T") =>
        client.AppendAsync(topic, Enumerable.Range(start, count).Select(i => new EventData($"k{i}", type, "x"u8.ToArray())));

    public static IEnumerable<string> Keys(int start, int count) => Enumerable.Range(start, count).Select(i => $"k{i}");
}

/// <summary>The PostgreSQL server of <c>EVENTHUB_TEST_POSTGRES_DSN</c>, a URL such as
/// <c>postgres://user@127.0.0.1:5432/postgres</c>.</summary>
internal static class Postgres
{
    public static string? Dsn => Environment.GetEnvironmentVariable("EVENTHUB_TEST_POSTGRES_DSN") is { Length: > 0 } dsn ? dsn : null;

    public static bool Required => Environment.GetEnvironmentVariable("EVENTHUB_TEST_REQUIRE_POSTGRES") == "1";

    /// <summary>The Npgsql connection string of a <c>postgres://</c> URL (a connection string of
    /// <c>key=value</c> pairs is returned as it is), with <paramref name="database"/> in place of
    /// the URL's when given.</summary>
    public static string ConnectionString(string dsn, string? database = null)
    {
        NpgsqlConnectionStringBuilder builder;
        if (dsn.StartsWith("postgres://", StringComparison.Ordinal) || dsn.StartsWith("postgresql://", StringComparison.Ordinal))
        {
            var url = new Uri(dsn);
            var user = url.UserInfo.Split(':', 2);
            builder = new NpgsqlConnectionStringBuilder
            {
                Host = url.Host,
                Port = url.Port > 0 ? url.Port : 5432,
                Database = Uri.UnescapeDataString(url.AbsolutePath.TrimStart('/')) is { Length: > 0 } db ? db : "postgres",
            };
            if (user[0].Length > 0)
            {
                builder.Username = Uri.UnescapeDataString(user[0]);
            }
            if (user.Length > 1)
            {
                builder.Password = Uri.UnescapeDataString(user[1]);
            }
        }
        else
        {
            builder = new NpgsqlConnectionStringBuilder(dsn);
        }
        if (database is not null)
        {
            builder.Database = database;
        }
        builder.Pooling = false;
        return builder.ConnectionString;
    }
}
