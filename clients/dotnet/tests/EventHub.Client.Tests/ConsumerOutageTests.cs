using Microsoft.Extensions.Logging;

namespace EventHub.Client.Tests;

/// <summary>The <see cref="Consumer"/> through restarts and outages of a hub of each test's own.</summary>
public sealed class ConsumerOutageTests
{
    private const string Topic = "orders";
    private const string Group = "test";

    /// <summary>Retries without end (the consumer's default), but quicker.</summary>
    private static readonly RetryPolicy FastForever = RetryPolicy.Forever with { InitialBackoff = TimeSpan.FromMilliseconds(20), MaxBackoff = TimeSpan.FromMilliseconds(250) };

    private static ILoggerFactory Loggers(ClientTestKit.LogRecorder log) =>
        LoggerFactory.Create(logging => logging.AddProvider(log).SetMinimumLevel(LogLevel.Trace));

    private static async Task AssertExactlyOnceAsync(SqliteProjection db, int events)
    {
        var rows = await db.RowsAsync(Topic);
        Assert.Equal(events, rows.Count);
        Assert.Equal(events, rows.Select(r => (r.Partition, r.Sequence)).Distinct().Count());
        Assert.Equal(Produce.Keys(0, events).Order(), rows.Select(r => r.Key).Order());
    }

    /// <summary>A hub stopped with SIGTERM ends its follow streams; the consumer (retrying without
    /// end, its default) reads again once the hub is back on the same database and port, and
    /// applies what comes next exactly once. However many partitions lost the hub, it logs one
    /// warning when it loses the hub and one information line when it is back.</summary>
    [Fact]
    public async Task Survives_a_hub_restart_and_logs_one_warning_and_one_information_line()
    {
        var hub = await Hub.StartAsync();
        try
        {
            var log = new ClientTestKit.LogRecorder();
            using var loggers = Loggers(log);
            await using var client = new EventHubClient(hub.Address);
            await client.CreateTopicAsync(Topic, 3);
            Assert.Equal(3, Produce.Keys(0, 30).Select(k => Partition.For(k, 3)).Distinct().Count());
            await using var db = await SqliteProjection.CreateAsync();
            var consumer = new Consumer(client, db.Connection, new ConsumerOptions { Topic = Topic, Group = Group }, Seen.Record(Topic), loggers.CreateLogger<Consumer>());
            await using var running = RunningConsumer.Start(consumer);

            await Produce.AppendAsync(client, Topic, 0, 30);
            await Wait.UntilAsync(async () => await db.CountAsync(Topic) >= 30, "30 applied events", running: running.Task, diagnostics: log.Dump);
            Assert.Empty(log.Consumer(LogLevel.Warning));

            Assert.Equal(0, await hub.StopAsync());
            // Every partition's stream noticed (each failure is a debug line), and the run goes on.
            await Wait.UntilAsync(
                () => Enumerable.Range(0, 3).All(p => log.Consumer(LogLevel.Debug).Any(r => r.Message.Contains($", partition {p}: ", StringComparison.Ordinal))),
                "the three partitions' failures",
                running: running.Task, diagnostics: log.Dump);

            hub = await Hub.StartAsync(hub.Directory, listen: hub.Target);
            await client.GetTopicAsync(Topic); // an append without event ids is not retried: wait until the hub is back
            await Produce.AppendAsync(client, Topic, 30, 30);
            await Wait.UntilAsync(async () => await db.CountAsync(Topic) >= 60, "60 applied events", running: running.Task, diagnostics: log.Dump);
            await Wait.UntilAsync(() => log.Consumer(LogLevel.Information).Count > 0, "the consumer to log that it reads again", running: running.Task, diagnostics: log.Dump);
            await running.StopAsync();

            await AssertExactlyOnceAsync(db, 60);
            var lost = Assert.Single(log.Consumer(LogLevel.Warning));
            Assert.Equal(3, lost.EventId.Id);
            Assert.Contains($"consumer '{Group}' of topic '{Topic}' lost the hub", lost.Message, StringComparison.Ordinal);
            var back = Assert.Single(log.Consumer(LogLevel.Information));
            Assert.Equal(4, back.EventId.Id);
            Assert.Contains("is reading again", back.Message, StringComparison.Ordinal);
            Assert.DoesNotContain(log.Entries, r => r.Level >= LogLevel.Error);
        }
        finally
        {
            await hub.DisposeAsync();
        }
    }

    /// <summary>Started while the hub is down, a consumer (following, or until caught up; looking
    /// the topic up or reading the partitions it was given) waits for it, logging once through
    /// the client's logger factory that it lost the hub and once that it is back, then applies
    /// every event.</summary>
    [Theory]
    [InlineData(true, false)]
    [InlineData(true, true)]
    [InlineData(false, false)]
    [InlineData(false, true)]
    public async Task Waits_for_a_hub_that_is_down_when_it_starts(bool follow, bool partitionsNamed)
    {
        var hub = await Hub.StartAsync();
        try
        {
            var log = new ClientTestKit.LogRecorder();
            using var loggers = Loggers(log);
            await using var client = new EventHubClient(new EventHubClientSettings { Address = hub.Address, LoggerFactory = loggers });
            await client.CreateTopicAsync(Topic, 2);
            await Produce.AppendAsync(client, Topic, 0, 10);
            await hub.KillAsync();

            await using var db = await SqliteProjection.CreateAsync();
            var options = new ConsumerOptions { Topic = Topic, Group = Group, Retry = FastForever, Partitions = partitionsNamed ? [0, 1] : null };
            var consumer = new Consumer(client, db.Connection, options, Seen.Record(Topic));
            await using var running = follow ? RunningConsumer.Start(consumer) : RunningConsumer.StartUntilCaughtUp(consumer);
            // More failures in a row than the client's default policy would allow.
            var bounded = RetryPolicy.Default.MaxAttempts!.Value;
            await Wait.UntilAsync(() => log.Consumer(LogLevel.Debug).Count > bounded, "failures to reach the hub", running: running.Task, diagnostics: log.Dump);
            Assert.Contains(log.Consumer(LogLevel.Debug), r => r.Message.Contains(partitionsNamed ? ", partition " : ", GetTopic: ", StringComparison.Ordinal));

            hub = await Hub.StartAsync(hub.Directory, listen: hub.Target);
            if (follow)
            {
                await Wait.UntilAsync(async () => await db.CountAsync(Topic) >= 10, "10 applied events", running: running.Task, diagnostics: log.Dump);
                await Wait.UntilAsync(() => log.Consumer(LogLevel.Information).Count > 0, "the consumer to log that it reads again", running: running.Task, diagnostics: log.Dump);
                await running.StopAsync();
            }
            else
            {
                await running.Task.WaitAsync(TimeSpan.FromSeconds(60));
            }

            await AssertExactlyOnceAsync(db, 10);
            Assert.Equal(3, Assert.Single(log.Consumer(LogLevel.Warning)).EventId.Id);
            Assert.Equal(4, Assert.Single(log.Consumer(LogLevel.Information)).EventId.Id);
        }
        finally
        {
            await hub.DisposeAsync();
        }
    }

    /// <summary>With a bounded retry policy the run throws <see cref="UnavailableException"/> after
    /// that many failures in a row: while following, and at start, and until caught up.</summary>
    [Fact]
    public async Task Bounded_retry_policy_gives_up_with_UnavailableException()
    {
        await using var hub = await Hub.StartAsync();
        var log = new ClientTestKit.LogRecorder();
        using var loggers = Loggers(log);
        await using var client = new EventHubClient(new EventHubClientSettings { Address = hub.Address, LoggerFactory = loggers });
        await client.CreateTopicAsync(Topic, 2);
        await using var db = await SqliteProjection.CreateAsync();
        var options = new ConsumerOptions
        {
            Topic = Topic,
            Group = Group,
            Retry = new RetryPolicy { MaxAttempts = 3, InitialBackoff = TimeSpan.FromMilliseconds(10), MaxBackoff = TimeSpan.FromMilliseconds(50) },
        };

        await using (var running = RunningConsumer.Start(new Consumer(client, db.Connection, options, Seen.Record(Topic))))
        {
            await Produce.AppendAsync(client, Topic, 0, 5);
            await Wait.UntilAsync(async () => await db.CountAsync(Topic) >= 5, "5 applied events", running: running.Task, diagnostics: log.Dump);
            await hub.KillAsync();
            await Assert.ThrowsAsync<UnavailableException>(() => running.Task.WaitAsync(TimeSpan.FromSeconds(60)));
        }
        // Two failures were retried (and logged), the third was thrown.
        var retries = log.Consumer(LogLevel.Debug);
        Assert.Contains(retries, r => r.Message.Contains("failure 2,", StringComparison.Ordinal));
        Assert.DoesNotContain(retries, r => r.Message.Contains("failure 3,", StringComparison.Ordinal));
        Assert.Single(log.Consumer(LogLevel.Warning));

        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await Assert.ThrowsAsync<UnavailableException>(() => new Consumer(client, db.Connection, options, Seen.Record(Topic)).RunAsync(timeout.Token));
        await Assert.ThrowsAsync<UnavailableException>(() => new Consumer(client, db.Connection, options, Seen.Record(Topic)).RunUntilCaughtUpAsync(timeout.Token));
        var named = options with { Partitions = [0, 1] }; // no topic lookup: the reads fail
        await Assert.ThrowsAsync<UnavailableException>(() => new Consumer(client, db.Connection, named, Seen.Record(Topic)).RunAsync(timeout.Token));
        await Assert.ThrowsAsync<UnavailableException>(() => new Consumer(client, db.Connection, named, Seen.Record(Topic)).RunUntilCaughtUpAsync(timeout.Token));
        Assert.False(timeout.IsCancellationRequested);
        await AssertExactlyOnceAsync(db, 5);
    }

    /// <summary>Cancelling the token returns the run at once, even while it waits (up to a minute
    /// here) to read again.</summary>
    [Fact]
    public async Task Cancelling_interrupts_the_backoff()
    {
        await using var hub = await Hub.StartAsync();
        var log = new ClientTestKit.LogRecorder();
        using var loggers = Loggers(log);
        await using var client = new EventHubClient(hub.Address);
        await client.CreateTopicAsync(Topic, 1);
        await using var db = await SqliteProjection.CreateAsync();
        var patient = RetryPolicy.Forever with { InitialBackoff = TimeSpan.FromMinutes(1), MaxBackoff = TimeSpan.FromMinutes(1) };
        var consumer = new Consumer(client, db.Connection, new ConsumerOptions { Topic = Topic, Group = Group, Retry = patient }, Seen.Record(Topic), loggers.CreateLogger<Consumer>());
        await using var running = RunningConsumer.Start(consumer);
        await hub.KillAsync();
        await Wait.UntilAsync(() => log.Consumer(LogLevel.Warning).Count > 0, "the consumer to lose the hub", running: running.Task, diagnostics: log.Dump);

        var clock = System.Diagnostics.Stopwatch.StartNew();
        await running.StopAsync();
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"the run took {clock.Elapsed} to return");
    }
}
