// Projects a topic into a SQLite database, exactly once: every event becomes one row of the
// table `events`, inserted in the transaction that also stores the partition's cursor. Kill the
// program at any moment and start it again: no event is lost and none is applied twice.
//
//   dotnet run -- [hub address] [topic] [database file] [events per page]
//
// It follows the topic (which must exist) through restarts of the hub until Ctrl+C or SIGTERM.
using System.Data.Common;
using System.Globalization;
using System.Runtime.InteropServices;
using EventHub.Client;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging;

var address = args.Length > 0 ? args[0] : "http://127.0.0.1:50051";
var topic = args.Length > 1 ? args[1] : "orders";
var path = args.Length > 2 ? args[2] : "projection.db";
var pageSize = args.Length > 3 ? int.Parse(args[3], CultureInfo.InvariantCulture) : 100;

// The consumer logs one warning when it loses the hub and one line when it is back; the gRPC
// library would log every failed call (and every call cancelled at exit) too.
using var loggers = LoggerFactory.Create(logging => logging
    .AddSimpleConsole(o => o.SingleLine = true)
    .AddFilter("Grpc", LogLevel.Warning));
var log = loggers.CreateLogger("ProjectToSqlite");

// Ctrl+C and SIGTERM stop the consumer; the page it is applying commits or rolls back whole.
using var stopping = new CancellationTokenSource();
void Stop(PosixSignalContext signal)
{
    signal.Cancel = true;
    stopping.Cancel();
}
using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop);
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop);

await using var db = new SqliteConnection($"Data Source={path}");
await db.OpenAsync();
await using (var create = db.CreateCommand())
{
    // No unique key on purpose: exactly once comes from the cursor committing with the rows,
    // so an event applied twice would show as two rows.
    create.CommandText = """
        PRAGMA journal_mode = WAL;
        CREATE TABLE IF NOT EXISTS events (
            "partition" INTEGER NOT NULL,
            sequence INTEGER NOT NULL,
            key TEXT NOT NULL,
            type TEXT NOT NULL,
            event_id TEXT NOT NULL,
            payload BLOB NOT NULL
        );
        """;
    await create.ExecuteNonQueryAsync();
}

// Applies one page inside the consumer's transaction, which then stores the cursor and commits.
async Task Project(PartitionPage page, DbTransaction transaction, CancellationToken cancellationToken)
{
    foreach (var e in page.Events)
    {
        await using var insert = db.CreateCommand();
        insert.Transaction = (SqliteTransaction)transaction;
        insert.CommandText = "INSERT INTO events VALUES ($partition, $sequence, $key, $type, $eventId, $payload)";
        insert.Parameters.AddWithValue("$partition", e.Partition);
        insert.Parameters.AddWithValue("$sequence", e.Sequence);
        insert.Parameters.AddWithValue("$key", e.Key);
        insert.Parameters.AddWithValue("$type", e.Type);
        insert.Parameters.AddWithValue("$eventId", e.EventId);
        insert.Parameters.AddWithValue("$payload", e.Payload.ToArray());
        await insert.ExecuteNonQueryAsync(cancellationToken);
    }
}

await using var hub = new EventHubClient(new EventHubClientSettings { Address = address, LoggerFactory = loggers });
var options = new ConsumerOptions { Topic = topic, Group = "project-to-sqlite", MaxEvents = pageSize };
var consumer = new Consumer(hub, db, options, Project);
log.LogInformation("projecting topic {Topic} of {Address} into {Path}", topic, address, path);
await consumer.RunAsync(stopping.Token);
log.LogInformation("stopped");
