using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Logging;
using static EventHub.Client.Tests.ClientTestKit;

namespace EventHub.Client.Tests;

/// <summary>Retries and stream recovery across restarts and silences of a hub of the test's own.</summary>
public sealed class RetryTests
{
    /// <summary>Retries often enough to outlast a restart of the hub, without end for streams that must
    /// not give up (each test's deadline bounds it).</summary>
    private static readonly RetryPolicy Patient = new() { MaxAttempts = 40, InitialBackoff = TimeSpan.FromMilliseconds(50), MaxBackoff = TimeSpan.FromMilliseconds(500) };

    private static bool IsWarning(LogEntry e) => e.Category == LogRecorder.ClientCategory && e.Level == LogLevel.Warning;

    private static bool IsInformation(LogEntry e) => e.Category == LogRecorder.ClientCategory && e.Level == LogLevel.Information;

    private static EventData Numbered(int i) =>
        Ev("k", payload: i.ToString(CultureInfo.InvariantCulture)) with { EventId = "e-" + i.ToString(CultureInfo.InvariantCulture) };

    [Fact]
    public async Task Unary_calls_ride_through_a_hub_restart()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        await using var hub = await Hub.StartAsync();
        await using var recorded = new RecordedClient(hub.Address, Patient);
        var (log, client) = (recorded.Log, recorded.Client);
        var topic = Names.Topic("restart");
        await client.CreateTopicAsync(topic, 1, ct);

        // An Append whose events all have ids begins while the hub is down ...
        Assert.Equal(0, await hub.StopAsync());
        var append = client.AppendAsync(topic, Numbered(1), cancellationToken: ct);
        // ... fails at least once (a second try begins) ...
        await log.WaitForAttemptAsync("Append", 2, ct);
        Assert.False(append.IsCompleted, "the Append ended while the hub was down");
        // ... and succeeds once the hub is back on the same port.
        await using var again = await Hub.StartAsync(hub.Directory, listen: hub.Target);
        var stored = (await append.WaitAsync(ct)).Results[0];
        Assert.Equal(AppendOutcome.Stored, stored.Outcome);
        Assert.Equal(1UL, stored.Sequence);
        // Stored once, however many tries it took.
        Assert.Equal(1UL, (await client.GetTopicAsync(topic, ct)).EventCount);
        var retried = (await client.AppendAsync(topic, Numbered(1), cancellationToken: ct)).Results[0];
        Assert.Equal(AppendOutcome.DuplicateEventId, retried.Outcome);
        Assert.Equal(stored.Cursor, retried.Cursor);

        // A read (GetTopic) too.
        Assert.Equal(0, await again.StopAsync());
        var gets = log.Attempts("GetTopic");
        var get = client.GetTopicAsync(topic, ct);
        await log.WaitForAttemptAsync("GetTopic", gets + 2, ct);
        Assert.False(get.IsCompleted, "GetTopic ended while the hub was down");
        await using var third = await Hub.StartAsync(hub.Directory, listen: hub.Target);
        Assert.Equal(1UL, (await get.WaitAsync(ct)).EventCount);
        Assert.Equal(0, await third.StopAsync());
    }

    [Fact]
    public async Task An_Append_without_event_ids_is_not_retried()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        await using var hub = await Hub.StartAsync();
        // The default retry policy: up to 8 tries for what may be retried.
        await using var recorded = new RecordedClient(hub.Address);
        var (log, client) = (recorded.Log, recorded.Client);
        Assert.Equal(RetryPolicy.Default, client.Settings.Retry);
        var topic = Names.Topic("noretry");
        await client.AppendAsync(topic, Ev("k"), cancellationToken: ct);
        Assert.Equal(0, await hub.StopAsync());

        // One event without an id is enough: the hub could not tell a second copy from a new event.
        var started = Stopwatch.StartNew();
        var e = await Assert.ThrowsAsync<UnavailableException>(() => client.AppendAsync(topic, [Ev("k") with { EventId = "has-id" }, Ev("k")], cancellationToken: ct));
        Assert.True(started.Elapsed < TimeSpan.FromSeconds(3), $"the Append failed after {started.Elapsed}");
        Assert.Equal(2, log.Attempts("Append"));
        Assert.False(string.IsNullOrEmpty(e.Message));

        // With ids everywhere it is retried (here thrice, then it gives up).
        await using (var quick = new EventHubClient(client.Settings with { Retry = new RetryPolicy { MaxAttempts = 3, InitialBackoff = TimeSpan.FromMilliseconds(10) } }))
        {
            await Assert.ThrowsAsync<UnavailableException>(() => quick.AppendAsync(topic, Ev("k") with { EventId = "has-id" }, cancellationToken: ct));
            Assert.Equal(5, log.Attempts("Append"));
        }

        // Nothing was stored while the hub was down.
        await using var again = await Hub.StartAsync(hub.Directory, listen: hub.Target);
        Assert.Equal(1UL, (await client.GetTopicAsync(topic, ct)).EventCount);
        Assert.Equal(0, await again.StopAsync());
    }

    [Fact]
    public async Task A_follow_resumes_right_after_its_last_page_across_a_restart_and_logs_the_outage_once()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        await using var hub = await Hub.StartAsync();
        await using var recorded = new RecordedClient(hub.Address, Patient);
        var (log, client) = (recorded.Log, recorded.Client);
        var topic = Names.Topic("follow");
        await client.CreateTopicAsync(topic, 1, ct);
        await client.AppendAsync(topic, Enumerable.Range(1, 5).Select(Numbered), cancellationToken: ct);

        var options = new FollowOptions { MaxEvents = 2, Heartbeat = TimeSpan.FromSeconds(1) };
        await using var pump = new PagePump(token => client.FollowAsync(topic, 0, Cursors.First, options, token), ct);
        var events = new List<EventRecord>();
        await pump.CollectAsync(events, 5, ct);
        Assert.Empty(log.ClientEntries);

        // The hub stops (ending the stream): one warning, then tries while it is down.
        Assert.Equal(0, await hub.StopAsync());
        var lost = await log.WaitForAsync(IsWarning, ct);
        Assert.Contains($"ReadPartition of topic '{topic}', partition 0", lost.Message, StringComparison.Ordinal);
        var tries = log.Attempts("ReadPartition");
        await log.WaitForAttemptAsync("ReadPartition", tries + 1, ct);

        // Back on the same port: the stream goes on from its last page.
        await using var again = await Hub.StartAsync(hub.Directory, listen: hub.Target);
        await client.AppendAsync(topic, Enumerable.Range(6, 5).Select(Numbered), cancellationToken: ct);
        await pump.CollectAsync(events, 10, ct);
        Assert.Equal(Enumerable.Range(1, 10).Select(i => (ulong)i), events.Select(e => e.Sequence));
        Assert.Equal(Enumerable.Range(1, 10).Select(i => i.ToString(CultureInfo.InvariantCulture)), events.Select(e => e.Text()));

        var back = await log.WaitForAsync(IsInformation, ct);
        Assert.Contains("reading again", back.Message, StringComparison.Ordinal);
        Assert.Single(log.ClientEntries, IsWarning);
        Assert.Single(log.ClientEntries, IsInformation);
        Assert.Equal(2, log.ClientEntries.Count);
        Assert.True(log.Attempts("ReadPartition") > tries, "no try while the hub was down");
    }

    [Fact]
    public async Task A_read_resumes_right_after_its_last_page_across_a_restart()
    {
        using var cts = Deadline(TimeSpan.FromSeconds(120));
        var ct = cts.Token;
        // Pages of 512 KiB, 24 MiB in all: more than HTTP/2 buffers for a reader that pauses, so the
        // hub is still sending when it shuts down.
        await using var hub = await Hub.StartAsync(extra: ["--shutdown-grace", "1"]);
        await using var recorded = new RecordedClient(hub.Address, Patient);
        var (log, client) = (recorded.Log, recorded.Client);
        var topic = Names.Topic("read");
        await client.CreateTopicAsync(topic, 1, ct);
        const int Count = 48;
        for (var batch = 0; batch < Count; batch += 8)
        {
            await client.AppendAsync(topic, Enumerable.Range(batch + 1, 8).Select(i => new EventData("k", "Big", new byte[512 * 1024]) { EventId = $"big-{i}" }), cancellationToken: ct);
        }

        var sequences = new List<ulong>();
        await using var pages = client.ReadPartitionAsync(topic, 0, Cursors.First, new ReadOptions { MaxEvents = 1 }, ct).GetAsyncEnumerator(ct);
        for (var i = 0; i < 2; i++)
        {
            Assert.True(await pages.MoveNextAsync());
            sequences.AddRange(pages.Current.Events.Select(e => e.Sequence));
        }
        // SIGTERM: after its grace the hub closes the connection under the stream. (Then it waits
        // 10 s for its store, which the test does not: it kills it and starts it again.)
        hub.Signal(15);
        await WaitForAsync(() => Task.FromResult(hub.LogTail().Contains("closing their connections", StringComparison.Ordinal)), "the hub to close its connections", TimeSpan.FromSeconds(30), ct);
        await hub.KillAsync();
        await using var again = await Hub.StartAsync(hub.Directory, listen: hub.Target, extra: ["--shutdown-grace", "1"]);
        while (await pages.MoveNextAsync())
        {
            Assert.Equal(512 * 1024, Assert.Single(pages.Current.Events).Payload.Length);
            sequences.AddRange(pages.Current.Events.Select(e => e.Sequence));
        }

        // Every event once, in order, although the stream broke and was opened again.
        Assert.Equal(Enumerable.Range(1, Count).Select(i => (ulong)i), sequences);
        Assert.Single(log.ClientEntries, IsWarning);
        Assert.Single(log.ClientEntries, IsInformation);
        Assert.Equal(0, await again.StopAsync());
    }

    [Fact]
    public async Task A_follow_of_a_hub_gone_silent_is_read_again_after_three_heartbeats()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        await using var hub = await Hub.StartAsync();
        await using var recorded = new RecordedClient(hub.Address);
        var (log, client) = (recorded.Log, recorded.Client);
        var topic = Names.Topic("silent");
        await client.CreateTopicAsync(topic, 1, ct);
        var first = (await client.AppendAsync(topic, Numbered(1), cancellationToken: ct)).Results[0];

        var heartbeat = TimeSpan.FromMilliseconds(200);
        await using var pump = new PagePump(token => client.FollowAsync(topic, 0, Cursors.First, new FollowOptions { Heartbeat = heartbeat }, token), ct);
        var events = new List<EventRecord>();
        Assert.Equal(first.Cursor, await pump.CollectAsync(events, 1, ct));

        // The hub stops answering without closing anything (SIGSTOP).
        var silent = Stopwatch.StartNew();
        hub.Signal(19);
        LogEntry lost;
        try
        {
            lost = await log.WaitForAsync(IsWarning, ct);
        }
        finally
        {
            hub.Signal(18);
        }
        var noticed = silent.Elapsed;
        // Taken for dead three heartbeats after the last page it delivered, no sooner (give or take
        // a timer tick), and not long after.
        var silence = Stopwatch.GetElapsedTime(pump.LastPageBefore(lost.Timestamp), lost.Timestamp);
        Assert.True(silence >= 3 * heartbeat - TimeSpan.FromMilliseconds(30), $"the stream was taken for dead {silence} after its last page, before three heartbeats of {heartbeat}");
        Assert.True(noticed < TimeSpan.FromSeconds(10), $"the silence was noticed only after {noticed}");
        Assert.Contains("no page or heartbeat for 0.6s", lost.Message, StringComparison.Ordinal);

        // SIGCONT: the stream is read again from where it was, and the next event arrives once.
        await client.AppendAsync(topic, Numbered(2), cancellationToken: ct);
        await pump.CollectAsync(events, 2, ct);
        Assert.Equal([1UL, 2UL], events.Select(e => e.Sequence));
        Assert.Equal(["1", "2"], events.Select(e => e.Text()));
        var back = await log.WaitForAsync(IsInformation, ct);
        Assert.Contains($"ReadPartition of topic '{topic}', partition 0: reading again", back.Message, StringComparison.Ordinal);
        Assert.Single(log.ClientEntries, IsWarning);
        Assert.Single(log.ClientEntries, IsInformation);
    }

    [Fact]
    public void Retry_policies_allow_their_tries_and_back_off_under_their_ceiling()
    {
        Assert.True(RetryPolicy.Default.AllowsRetry(6));
        Assert.False(RetryPolicy.Default.AllowsRetry(7));
        Assert.False(RetryPolicy.None.AllowsRetry(0));
        Assert.All(new[] { 0, 8, 1_000_000, int.MaxValue - 1 }, n => Assert.True(RetryPolicy.Forever.AllowsRetry(n)));

        // Full jitter under min(MaxBackoff, InitialBackoff * Multiplier^n), even where the
        // exponential term overflows.
        var policy = new RetryPolicy { InitialBackoff = TimeSpan.FromMilliseconds(100), MaxBackoff = TimeSpan.FromSeconds(2), Multiplier = 3 };
        foreach (var n in new[] { 0, 1, 2, 10, 1100, 1_000_000, int.MaxValue })
        {
            var ceiling = TimeSpan.FromMilliseconds(Math.Min(2000, 100 * Math.Pow(3, Math.Min(n, 64))));
            for (var i = 0; i < 100; i++)
            {
                Assert.InRange(policy.Backoff(n), TimeSpan.Zero, ceiling);
                Assert.InRange(RetryPolicy.Forever.Backoff(n), TimeSpan.Zero, RetryPolicy.Forever.MaxBackoff);
            }
        }
    }
}
