using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace EventHub.Client.Tests;

/// <summary>The client's HTTP/2 connection to the hub, through a proxy of the test's own.</summary>
public sealed class ConnectionTests(ITestOutputHelper output)
{
    private const string Topic = "vanished";
    private const string Group = "test";

    /// <summary>Retries without end, at most half a second apart, so that the streams are soon
    /// back once the dead connection is gone.</summary>
    private static readonly RetryPolicy FastForever = RetryPolicy.Forever with { InitialBackoff = TimeSpan.FromMilliseconds(20), MaxBackoff = TimeSpan.FromMilliseconds(500) };

    /// <summary>
    /// The connection to the hub goes silent without being closed: a proxy stops passing bytes
    /// either way (as when a NAT entry is dropped or the peer's machine dies). A consumer and a
    /// follow stream of a client with the default HTTP handler notice the silence after three
    /// heartbeats and open their streams again, at first on the same dead connection; the
    /// handler's keepalive (a ping after 20 s without a frame, unanswered for 10 s) then drops it,
    /// and the streams read on over a new connection, receiving an event appended after the
    /// connection died exactly once.
    /// </summary>
    [Fact]
    public async Task A_dead_connection_is_replaced_and_the_streams_read_on_over_a_new_one()
    {
        var bound = TimeSpan.FromSeconds(90);
        var clock = Stopwatch.StartNew();
        TimeSpan Left() => bound - clock.Elapsed;
        using var cts = ClientTestKit.Deadline(bound);
        var ct = cts.Token;

        await using var hub = await Hub.StartAsync();
        await using var proxy = BlackholeProxy.Start(hub.Target);
        var log = new ClientTestKit.LogRecorder();
        using var loggers = LoggerFactory.Create(b => b.AddProvider(log).SetMinimumLevel(LogLevel.Debug));
        await using var direct = new EventHubClient(hub.Address);
        // The client's defaults but for its logger: no HttpMessageHandlerFactory, so the channel
        // runs on EventHubClient's own SocketsHttpHandler and its keepalive.
        await using var client = new EventHubClient(new EventHubClientSettings { Address = proxy.Address, LoggerFactory = loggers });
        Assert.Null(client.Settings.HttpMessageHandlerFactory);
        await direct.CreateTopicAsync(Topic, 1, ct);

        var heartbeat = TimeSpan.FromMilliseconds(200);
        await using var db = await SqliteProjection.CreateAsync();
        var consumed = new ConcurrentQueue<string>();
        var record = Seen.Record(Topic);
        var consumer = new Consumer(
            client,
            db.Connection,
            new ConsumerOptions { Topic = Topic, Group = Group, Heartbeat = heartbeat, Retry = FastForever },
            async (page, transaction, token) =>
            {
                await record(page, transaction, token);
                foreach (var e in page.Events)
                {
                    consumed.Enqueue(Encoding.UTF8.GetString(e.Payload.Span));
                }
            });
        await using var running = RunningConsumer.Start(consumer);

        var followed = new ConcurrentQueue<string>();
        using var stopFollowing = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var following = Task.Run(async () =>
        {
            var options = new FollowOptions { Heartbeat = heartbeat, Retry = FastForever };
            await foreach (var page in client.FollowAsync(Topic, 0, Cursors.First, options, stopFollowing.Token))
            {
                foreach (var e in page.Events)
                {
                    followed.Enqueue(Encoding.UTF8.GetString(e.Payload.Span));
                }
            }
        }, CancellationToken.None);

        string Diagnostics() =>
            $"after {clock.Elapsed}; follow: {(following.IsFaulted ? following.Exception!.InnerException : following.Status)}\n" +
            $"proxy: {proxy.Describe()}\nlog (last 60):\n{string.Join("\n", log.Entries.TakeLast(60).Select(r => $"{r.Level} {r.Category}[{r.EventId.Id}] {r.Message}"))}";
        async Task UntilBothGotAsync(string payload, TimeSpan timeout)
        {
            await Wait.UntilAsync(
                () =>
                {
                    Assert.False(following.IsCompleted, $"the follow stream ended while waiting for '{payload}'\n{Diagnostics()}");
                    return consumed.Contains(payload) && followed.Contains(payload);
                },
                $"the consumer and the follow stream to receive '{payload}'",
                timeout,
                running.Task,
                Diagnostics);
        }

        // Both streams read through the proxy.
        await direct.AppendAsync(Topic, new EventData("k", "T", "before"u8.ToArray()), cancellationToken: ct);
        await UntilBothGotAsync("before", TimeSpan.FromSeconds(10));
        var before = proxy.Accepted;
        Assert.True(before > 0, "the streams received an event without a connection through the proxy");

        // Every connection open now stops passing bytes, without being closed.
        var cut = await proxy.BlackholeAsync();
        var blackholed = clock.Elapsed;
        Assert.Equal(before, cut);
        var frozen = proxy.BytesToClient(0, before);

        // Both watchdogs notice the silence and open their streams again: on the dead connection,
        // which the keepalive cannot have dropped yet (its first ping is due 20 s after the last
        // frame), so no new connection comes.
        var silence = $"no page or heartbeat for {(3 * heartbeat).TotalSeconds:0.###}s";
        await Wait.UntilAsync(
            () => log.Consumer(LogLevel.Debug).Any(r => r.Message.Contains(silence, StringComparison.Ordinal)) &&
                log.Entries.Any(r => r.Category == ClientTestKit.LogRecorder.ClientCategory && r.Level == LogLevel.Warning && r.Message.Contains(silence, StringComparison.Ordinal)),
            "the consumer and the follow stream to notice the silence",
            TimeSpan.FromSeconds(10),
            running.Task,
            Diagnostics);
        Assert.True(proxy.Accepted == before, $"a new connection before the keepalive could drop the dead one\n{Diagnostics()}");

        // An event appended now can only arrive over a connection accepted after the blackhole.
        await direct.AppendAsync(Topic, new EventData("k", "T", "after"u8.ToArray()), cancellationToken: ct);
        await UntilBothGotAsync("after", Left());
        var recovered = clock.Elapsed - blackholed;
        output.WriteLine($"the event appended after the blackhole arrived {recovered.TotalSeconds:0.0}s after it; {proxy.Describe()}");

        Assert.True(proxy.Accepted > before, $"no connection was accepted after the blackhole\n{Diagnostics()}");
        Assert.True(proxy.BytesToClient(before, proxy.Accepted - before) > 0, $"the new connections carried nothing from the hub\n{Diagnostics()}");
        Assert.Equal(frozen, proxy.BytesToClient(0, before));

        await stopFollowing.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => following.WaitAsync(TimeSpan.FromSeconds(20)));
        await running.StopAsync();

        // Each event once, in order, in the projection and on the follow stream.
        var rows = await db.RowsAsync(Topic);
        Assert.Equal([1L, 2L], rows.Select(r => r.Sequence));
        Assert.Equal(["before", "after"], consumed);
        Assert.Equal(["before", "after"], followed);
        Assert.Equal(4, Assert.Single(log.Consumer(LogLevel.Information)).EventId.Id);
        Assert.Contains(log.Entries, r => r.Category == ClientTestKit.LogRecorder.ClientCategory && r.Level == LogLevel.Information && r.Message.Contains("reading again", StringComparison.Ordinal));
    }
}

/// <summary>
/// A TCP proxy on 127.0.0.1 to a target. <see cref="BlackholeAsync"/> cuts every connection open
/// at that moment as a vanished peer or a dropped NAT entry does: nothing more is passed either
/// way, and neither socket is closed, reset or even read, so neither end learns anything.
/// Connections accepted later are passed through normally.
/// </summary>
internal sealed class BlackholeProxy : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly IPEndPoint _target;
    private readonly CancellationTokenSource _closing = new();
    private readonly List<Link> _links = [];
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private Task _accepting = Task.CompletedTask;

    private BlackholeProxy(IPEndPoint target)
    {
        _target = target;
        _listener = new TcpListener(IPAddress.Loopback, 0);
    }

    /// <summary><c>http://127.0.0.1:PORT</c>, for <see cref="EventHubClient"/>.</summary>
    public string Address => $"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}";

    /// <summary>How many connections the proxy accepted so far.</summary>
    public int Accepted
    {
        get
        {
            lock (_links)
            {
                return _links.Count;
            }
        }
    }

    /// <summary>Starts a proxy to <paramref name="target"/> (<c>127.0.0.1:PORT</c>).</summary>
    public static BlackholeProxy Start(string target)
    {
        var proxy = new BlackholeProxy(IPEndPoint.Parse(target));
        proxy._listener.Start();
        proxy._accepting = proxy.AcceptAsync();
        return proxy;
    }

    /// <summary>The bytes passed from the target to the client by <paramref name="count"/>
    /// connections from the <paramref name="first"/>-th accepted (0-based).</summary>
    public long BytesToClient(int first, int count)
    {
        lock (_links)
        {
            return _links.Skip(first).Take(count).Sum(l => l.BytesToClient);
        }
    }

    /// <summary>Cuts every connection open now (not one that a side has closed) and returns how
    /// many there were. Once it returns, nothing more passes through them.</summary>
    public async Task<int> BlackholeAsync()
    {
        Link[] links;
        lock (_links)
        {
            links = [.. _links];
        }
        var cut = 0;
        foreach (var link in links)
        {
            if (await link.FreezeAsync())
            {
                cut++;
            }
        }
        return cut;
    }

    /// <summary>Each connection: when it was accepted, whether it is blackholed or ended, and
    /// what it carried to the client.</summary>
    public string Describe()
    {
        lock (_links)
        {
            return $"{_links.Count} connection(s) accepted: " + string.Join("; ", _links.Select((l, i) => $"#{i} at {l.AcceptedAt.TotalSeconds:0.0}s {l.State}, {l.BytesToClient} bytes to the client"));
        }
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        await _closing.CancelAsync();
        _listener.Stop();
        Link[] links;
        lock (_links)
        {
            links = [.. _links];
        }
        foreach (var link in links)
        {
            link.Close();
        }
        await Task.WhenAll(links.Select(l => l.Done).Append(_accepting)).WaitAsync(TimeSpan.FromSeconds(10));
        foreach (var link in links)
        {
            link.Dispose();
        }
        _closing.Dispose();
    }

    private async Task AcceptAsync()
    {
        while (true)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptSocketAsync(_closing.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }
            var target = new Socket(SocketType.Stream, ProtocolType.Tcp);
            try
            {
                await target.ConnectAsync(_target, _closing.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                client.Dispose();
                target.Dispose();
                if (_closing.IsCancellationRequested)
                {
                    return;
                }
                continue;
            }
            client.NoDelay = true;
            target.NoDelay = true;
            var link = new Link(client, target, _clock.Elapsed);
            lock (_links)
            {
                _links.Add(link);
            }
            link.Start();
        }
    }

    /// <summary>One accepted connection and its connection to the target, with a copy loop each way.</summary>
    private sealed class Link(Socket client, Socket target, TimeSpan acceptedAt) : IDisposable
    {
        private readonly CancellationTokenSource _freeze = new();
        private long _bytesToClient;
        private int _ended;

        public TimeSpan AcceptedAt { get; } = acceptedAt;

        public long BytesToClient => Interlocked.Read(ref _bytesToClient);

        /// <summary>Both copy loops have returned.</summary>
        public Task Done { get; private set; } = Task.CompletedTask;

        public string State => _freeze.IsCancellationRequested ? "blackholed" : Volatile.Read(ref _ended) != 0 ? "ended" : "open";

        public void Start() =>
            Done = Task.WhenAll(
                Task.Run(() => CopyAsync(client, target, toClient: false)),
                Task.Run(() => CopyAsync(target, client, toClient: true)));

        /// <summary>Stops both copy loops without closing anything and waits for them, so that a
        /// chunk being passed is either through or dropped; false if a side had closed it.</summary>
        public async Task<bool> FreezeAsync()
        {
            if (Volatile.Read(ref _ended) != 0)
            {
                return false;
            }
            await _freeze.CancelAsync();
            await Done;
            return true;
        }

        /// <summary>Closes both sockets (the proxy is closing).</summary>
        public void Close()
        {
            client.Dispose();
            target.Dispose();
        }

        public void Dispose()
        {
            Close();
            _freeze.Dispose();
        }

        private async Task CopyAsync(Socket from, Socket to, bool toClient)
        {
            var buffer = new byte[32 * 1024];
            try
            {
                while (true)
                {
                    var n = await from.ReceiveAsync(buffer, SocketFlags.None, _freeze.Token);
                    if (n == 0)
                    {
                        // A side closed its half: pass that on, unless blackholed meanwhile.
                        Volatile.Write(ref _ended, 1);
                        if (!_freeze.IsCancellationRequested)
                        {
                            to.Shutdown(SocketShutdown.Send);
                        }
                        return;
                    }
                    await to.SendAsync(buffer.AsMemory(0, n), SocketFlags.None, _freeze.Token);
                    if (toClient)
                    {
                        Interlocked.Add(ref _bytesToClient, n);
                    }
                }
            }
            catch (OperationCanceledException) when (_freeze.IsCancellationRequested)
            {
                // Blackholed: both sockets stay open, and nobody reads them any more.
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                // A side reset the connection, or the proxy is closing: close the other side too.
                Volatile.Write(ref _ended, 1);
                Close();
            }
        }
    }
}
