using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Data.Sqlite;
using Xunit.Abstractions;

namespace EventHub.Client.Tests;

/// <summary>The example consumer (examples/ProjectToSqlite), SIGKILLed again and again while a
/// producer appends, and restarted each time, still applies every event exactly once.</summary>
public sealed partial class ExactlyOnceTests(ITestOutputHelper output)
{
    private const int PartitionCount = 4;
    private const int MinimumEvents = 3000;
    private const int Batch = 50;
    private const int PageSize = 10;

    /// <summary>The most events the producer appends ahead of the projection, so that there is
    /// always a backlog for a kill to interrupt, and events keep coming while the example runs.</summary>
    private const int Backlog = 1500;

    /// <summary>How many events each run applies (as its database shows) before it is killed:
    /// spread out, and each less than the backlog, so that every kill lands mid-run.</summary>
    private static readonly int[] ProgressBeforeKill = [60, 350, 140, 500, 230, 90, 420];

    [Fact]
    public async Task Sigkilled_example_consumer_applies_every_event_exactly_once()
    {
        using var deadline = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        await using var hub = await Hub.StartAsync();
        await using var client = new EventHubClient(hub.Address);
        var topic = Names.Topic("once");
        await client.CreateTopicAsync(topic, PartitionCount);
        var directory = Hub.NewDirectory();
        var db = Path.Combine(directory, "projection.db");

        // The producer: batches of events with event ids, never more than Backlog ahead of the
        // projection, until the kills are over and at least MinimumEvents are appended.
        var produced = 0;
        var killing = true;
        var producer = Task.Run(async () =>
        {
            while (Volatile.Read(ref killing) || produced < MinimumEvents)
            {
                if (produced - await CountAsync(db) >= Backlog)
                {
                    await Task.Delay(5, deadline.Token); // polls the projection's progress
                    continue;
                }
                var events = Enumerable.Range(produced, Batch).Select(i => new EventData($"k{i % 37}", "Counted", Encoding.UTF8.GetBytes(Number(i))) { EventId = $"ev-{i}" }).ToList();
                await client.AppendAsync(topic, events, cancellationToken: deadline.Token);
                Volatile.Write(ref produced, produced + Batch);
            }
        });

        var kills = new List<string>();
        var midBacklog = 0; // kills with events appended but not applied yet
        foreach (var progress in ProgressBeforeKill)
        {
            var before = await CountAsync(db);
            using var example = ExampleProcess.Start(hub.Address, topic, db, Number(PageSize));
            await UntilAsync(async () =>
            {
                example.ThrowIfExited();
                return await CountAsync(db) >= before + progress;
            }, $"the example to apply {progress} events past {before}", producer, deadline.Token);
            await example.KillAsync();
            var applied = await CountAsync(db);
            var appended = Volatile.Read(ref produced);
            kills.Add($"{applied} of {appended}");
            if (applied < appended)
            {
                midBacklog++;
            }
        }
        Volatile.Write(ref killing, false);

        // A last run follows the topic while the rest is appended, until it holds every event,
        // and stops cleanly on SIGTERM.
        int total, rows;
        using (var example = ExampleProcess.Start(hub.Address, topic, db, Number(PageSize)))
        {
            await producer.WaitAsync(deadline.Token);
            total = produced;
            await UntilAsync(async () =>
            {
                example.ThrowIfExited();
                var count = await CountAsync(db);
                Assert.True(count <= total, $"the projection holds {count} rows for {total} events");
                return count == total;
            }, $"the example to apply all {total} events", producer, deadline.Token);
            Assert.Equal(0, await example.TerminateAsync());
            rows = await CountAsync(db);
        }

        // Every event's row, once: by position, by event id, and with its own payload.
        var seen = await ReadEventsAsync(db);
        var duplicates = seen.Count - seen.Select(e => (e.Partition, e.Sequence)).Distinct().Count();
        var ids = seen.Select(e => e.EventId).ToHashSet();
        var losses = Enumerable.Range(0, total).Count(i => !ids.Contains($"ev-{i}"));
        var summary = $"kills={kills.Count} (with a backlog: {midBacklog}) events={total} rows={rows} duplicates={duplicates} losses={losses}";
        output.WriteLine($"exactly-once: {summary}");
        output.WriteLine($"events applied of appended at each kill: {string.Join(", ", kills)}");
        Console.WriteLine($"exactly-once: {summary}");

        Assert.True(kills.Count >= 5);
        Assert.Equal(0, duplicates);
        Assert.Equal(0, losses);
        Assert.Equal(total, seen.Count);
        Assert.Equal(total, ids.Count);
        Assert.All(seen, e => Assert.Equal(e.EventId, "ev-" + e.Payload));
        var info = await client.GetTopicAsync(topic);
        foreach (var partition in info.Partitions)
        {
            var sequences = seen.Where(e => e.Partition == partition.Partition).Select(e => e.Sequence).Order();
            Assert.Equal(Enumerable.Range(1, (int)partition.EventCount).Select(s => (long)s), sequences);
        }
        Assert.Equal(
            info.Partitions.ToDictionary(p => p.Partition, p => p.HeadCursor),
            await CursorsAsync(db, "project-to-sqlite", topic));
        try
        {
            Directory.Delete(directory, recursive: true);
        }
        catch (IOException)
        {
            // A temporary directory; leaving it behind is harmless.
        }
    }

    /// <summary>The example follows its topic through a restart of the hub, logging one warning
    /// when it loses the hub and one line when it is back, and stops cleanly on SIGTERM.</summary>
    [Fact]
    public async Task Example_consumer_follows_through_a_hub_restart_and_stops_on_sigterm()
    {
        using var deadline = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var hub = await Hub.StartAsync();
        var directory = Hub.NewDirectory();
        try
        {
            await using var client = new EventHubClient(hub.Address);
            var topic = Names.Topic("example");
            await client.CreateTopicAsync(topic, 3);
            var db = Path.Combine(directory, "projection.db");
            using var example = ExampleProcess.Start(hub.Address, topic, db);
            async Task AppliedAsync(int events) => await UntilAsync(async () =>
            {
                example.ThrowIfExited();
                return await CountAsync(db) >= events;
            }, $"{events} applied events", null, deadline.Token);

            await Produce.AppendAsync(client, topic, 0, 30);
            await AppliedAsync(30);
            Assert.Equal(0, await hub.StopAsync());
            await UntilAsync(() => Task.FromResult(example.Output.Contains("lost the hub", StringComparison.Ordinal)), "the example to lose the hub", null, deadline.Token);
            hub = await Hub.StartAsync(hub.Directory, listen: hub.Target);
            await client.GetTopicAsync(topic); // an append without event ids is not retried: wait until the hub is back
            await Produce.AppendAsync(client, topic, 30, 30);
            await AppliedAsync(60);
            await UntilAsync(() => Task.FromResult(example.Output.Contains("is reading again", StringComparison.Ordinal)), "the example to read again", null, deadline.Token);
            Assert.Equal(0, await example.TerminateAsync());

            var log = example.Output;
            output.WriteLine(log);
            Assert.Single(log.Split('\n'), line => line.Contains("lost the hub", StringComparison.Ordinal));
            Assert.Single(log.Split('\n'), line => line.Contains("is reading again", StringComparison.Ordinal));
            Assert.Contains("stopped", log, StringComparison.Ordinal);
            var events = await ReadEventsAsync(db);
            Assert.Equal(60, events.Count);
            Assert.Equal(60, events.Select(e => (e.Partition, e.Sequence)).Distinct().Count());
        }
        finally
        {
            await hub.DisposeAsync();
            try
            {
                Directory.Delete(directory, recursive: true);
            }
            catch (IOException)
            {
                // A temporary directory; leaving it behind is harmless.
            }
        }
    }

    private static string Number(int i) => i.ToString(CultureInfo.InvariantCulture);

    /// <summary>Bounded polling of <paramref name="condition"/>; fails when <paramref name="producer"/> fails.</summary>
    private static async Task UntilAsync(Func<Task<bool>> condition, string what, Task? producer, CancellationToken deadline)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(deadline);
        timeout.CancelAfter(TimeSpan.FromSeconds(90));
        while (!await condition())
        {
            if (producer is { IsFaulted: true })
            {
                await producer;
            }
            if (timeout.IsCancellationRequested)
            {
                Assert.Fail($"timed out waiting for {what}");
            }
            await Task.Delay(2, CancellationToken.None); // a kill lands soon after the progress it waits for
        }
    }

    private static SqliteConnection Open(string path) => SqliteProjection.Open(path);

    /// <summary>The rows of the example's table <c>events</c> (0 before it has created it).</summary>
    private static async Task<int> CountAsync(string path)
    {
        if (!File.Exists(path))
        {
            return 0;
        }
        await using var connection = Open(path);
        await connection.OpenAsync();
        await using var count = connection.CreateCommand();
        count.CommandText = "SELECT count(*) FROM events";
        try
        {
            return Convert.ToInt32(await count.ExecuteScalarAsync(), CultureInfo.InvariantCulture);
        }
        catch (SqliteException e) when (e.Message.Contains("no such table", StringComparison.Ordinal))
        {
            return 0;
        }
    }

    private sealed record Applied(int Partition, long Sequence, string EventId, string Payload);

    private static async Task<List<Applied>> ReadEventsAsync(string path)
    {
        await using var connection = Open(path);
        await connection.OpenAsync();
        await using var select = connection.CreateCommand();
        select.CommandText = """SELECT "partition", sequence, event_id, payload FROM events""";
        var rows = new List<Applied>();
        await using var reader = await select.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            rows.Add(new Applied(reader.GetInt32(0), reader.GetInt64(1), reader.GetString(2), Encoding.UTF8.GetString((byte[])reader.GetValue(3))));
        }
        return rows;
    }

    private static async Task<Dictionary<int, string>> CursorsAsync(string path, string group, string topic)
    {
        await using var connection = Open(path);
        await connection.OpenAsync();
        return await Seen.CursorsAsync(connection, group, topic);
    }

    /// <summary>The built example, run as <c>dotnet ProjectToSqlite.dll ARGS</c>, its output kept.</summary>
    private sealed partial class ExampleProcess : IDisposable
    {
        private readonly Process _process;
        private readonly StringBuilder _output = new();

        private ExampleProcess(Process process) => _process = process;

        /// <summary>The example's build output (the test project builds it: a ProjectReference).</summary>
        private static string Dll
        {
            get
            {
                var configuration = AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Release{Path.DirectorySeparatorChar}", StringComparison.Ordinal) ? "Release" : "Debug";
                return Path.Combine(Hub.RepositoryRoot, "clients", "dotnet", "examples", "ProjectToSqlite", "bin", configuration, "net10.0", "ProjectToSqlite.dll");
            }
        }

        public static ExampleProcess Start(params string[] args)
        {
            Assert.True(File.Exists(Dll), $"{Dll} is not built; build the test project (it references the example)");
            var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
            info.ArgumentList.Add(Dll);
            foreach (var arg in args)
            {
                info.ArgumentList.Add(arg);
            }
            var process = Process.Start(info) ?? throw new InvalidOperationException("could not start dotnet");
            var example = new ExampleProcess(process);
            process.OutputDataReceived += (_, e) => example.Keep(e.Data);
            process.ErrorDataReceived += (_, e) => example.Keep(e.Data);
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            return example;
        }

        public string Output
        {
            get
            {
                lock (_output)
                {
                    var text = _output.ToString();
                    return text.Length > 4000 ? text[^4000..] : text;
                }
            }
        }

        public void ThrowIfExited()
        {
            if (_process.HasExited)
            {
                Assert.Fail($"the example exited with {_process.ExitCode}; its output:\n{Output}");
            }
        }

        /// <summary>SIGKILL, and waits until it is gone.</summary>
        public async Task KillAsync()
        {
            ThrowIfExited();
            _process.Kill(); // SIGKILL on Unix
            await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
        }

        /// <summary>SIGTERM; returns the exit code (within 30 s).</summary>
        public async Task<int> TerminateAsync()
        {
            ThrowIfExited();
            Assert.Equal(0, Kill(_process.Id, 15));
            try
            {
                await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
            }
            catch (TimeoutException)
            {
                Assert.Fail($"the example did not stop within 30 s of SIGTERM; its output:\n{Output}");
            }
            _process.WaitForExit(); // the output's last lines
            Assert.True(_process.ExitCode == 0, $"the example exited with {_process.ExitCode} on SIGTERM; its output:\n{Output}");
            return _process.ExitCode;
        }

        public void Dispose()
        {
            if (!_process.HasExited)
            {
                _process.Kill();
                _process.WaitForExit();
            }
            _process.Dispose();
        }

        private void Keep(string? line)
        {
            if (line is null)
            {
                return;
            }
            lock (_output)
            {
                _output.AppendLine(line);
            }
        }

        [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
        private static partial int Kill(int pid, int signal);
    }
}
