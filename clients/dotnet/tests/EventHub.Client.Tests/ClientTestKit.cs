using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging;

namespace EventHub.Client.Tests;

/// <summary>Helpers of the client's behavioural tests (ClientTests, ReadTests, ErrorTests …), kept
/// in one class so that their names cannot collide with other test files.</summary>
internal static class ClientTestKit
{
    /// <summary>How long any one test may take before its calls are cancelled.</summary>
    public static readonly TimeSpan TestTimeout = TimeSpan.FromSeconds(60);

    /// <summary>A token source that cancels after <paramref name="timeout"/> (a minute by default):
    /// every call of a test takes its token, so no test can hang.</summary>
    public static CancellationTokenSource Deadline(TimeSpan? timeout = null) => new(timeout ?? TestTimeout);

    /// <summary>An event with a text payload.</summary>
    public static EventData Ev(string key, string type = "Happened", string payload = "") =>
        new(key, type, Encoding.UTF8.GetBytes(payload));

    /// <summary>The payload as text.</summary>
    public static string Text(this EventRecord e) => Encoding.UTF8.GetString(e.Payload.Span);

    /// <summary>"key@version key@version …" of <paramref name="events"/>, for compact comparisons.</summary>
    public static string KeysOf(IEnumerable<EventRecord> events) => string.Join(" ", events.Select(e => $"{e.Key}@{e.KeyVersion}"));

    /// <summary>Reads a partition from <paramref name="cursor"/> until caught up: its events, the
    /// last page's cursor and the pages.</summary>
    public static async Task<(List<EventRecord> Events, string Cursor, List<PartitionPage> Pages)> ReadAllAsync(
        EventHubClient client, string topic, int partition, string cursor, CancellationToken cancellationToken, ReadOptions? options = null)
    {
        var events = new List<EventRecord>();
        var pages = new List<PartitionPage>();
        await foreach (var page in client.ReadPartitionAsync(topic, partition, cursor, options, cancellationToken))
        {
            Assert.Equal(partition, page.Partition);
            pages.Add(page);
            events.AddRange(page.Events);
            cursor = page.Cursor;
        }
        Assert.NotEmpty(pages);
        return (events, cursor, pages);
    }

    /// <summary>A whole Surface call: its events and pages.</summary>
    public static async Task<(List<EventRecord> Events, List<SurfacePage> Pages)> SurfaceAllAsync(
        EventHubClient client, string topic, CancellationToken cancellationToken, SurfaceOptions? options = null)
    {
        var events = new List<EventRecord>();
        var pages = new List<SurfacePage>();
        await foreach (var page in client.SurfaceAsync(topic, options, cancellationToken))
        {
            pages.Add(page);
            events.AddRange(page.Events);
        }
        Assert.NotEmpty(pages);
        return (events, pages);
    }

    /// <summary>A whole ReadKey call: its pages.</summary>
    public static async Task<List<KeyPage>> ReadKeyAllAsync(EventHubClient client, string topic, string key, CancellationToken cancellationToken, ulong fromVersion = 0, int maxEvents = 0)
    {
        var pages = new List<KeyPage>();
        await foreach (var page in client.ReadKeyAsync(topic, key, fromVersion, maxEvents, cancellationToken))
        {
            pages.Add(page);
        }
        Assert.NotEmpty(pages);
        return pages;
    }

    /// <summary>A key that lands in partition <paramref name="partition"/> of <paramref name="count"/>.</summary>
    public static string KeyIn(int partition, int count, string prefix = "key-")
    {
        for (var i = 0; ; i++)
        {
            var key = prefix + i.ToString(System.Globalization.CultureInfo.InvariantCulture);
            if (Partition.For(key, count) == partition)
            {
                return key;
            }
        }
    }

    /// <summary>A loopback port nothing listens on (bound, read, released).</summary>
    public static int FreePort()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }

    /// <summary>The hub's own status message of a failed call: what the gRPC layer received.</summary>
    public static string HubMessage(EventHubException e) =>
        Assert.IsType<Grpc.Core.RpcException>(e.InnerException).Status.Detail;

    /// <summary>Asserts that <paramref name="e"/> carries the hub's message unchanged (not empty).</summary>
    public static void AssertHubMessage(EventHubException e, string? contains = null)
    {
        Assert.False(string.IsNullOrWhiteSpace(e.Message), $"{e.GetType().Name} has no message");
        Assert.Equal(HubMessage(e), e.Message);
        if (contains is not null)
        {
            Assert.Contains(contains, e.Message, StringComparison.Ordinal);
        }
    }

    /// <summary>Polls <paramref name="condition"/> until it holds, failing after <paramref name="timeout"/>.</summary>
    public static async Task WaitForAsync(Func<Task<bool>> condition, string what, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"timed out after {timeout} waiting for {what}");
            await Task.Delay(20, cancellationToken);
        }
    }

    /// <summary>
    /// Reads a stream of pages in the background, so that it goes on (and retries) while the test
    /// does other things; the test takes the pages with <see cref="NextAsync"/>. Disposing stops the
    /// stream.
    /// </summary>
    public sealed class PagePump : IAsyncDisposable
    {
        private readonly CancellationTokenSource _stop;
        private readonly System.Threading.Channels.Channel<PartitionPage> _pages = System.Threading.Channels.Channel.CreateUnbounded<PartitionPage>();
        private readonly Task _reading;
        private readonly List<long> _received = [];

        /// <summary>Starts reading the stream <paramref name="open"/> makes with its token.</summary>
        public PagePump(Func<CancellationToken, IAsyncEnumerable<PartitionPage>> open, CancellationToken cancellationToken)
        {
            _stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            var token = _stop.Token;
            _reading = Task.Run(async () =>
            {
                try
                {
                    await foreach (var page in open(token).WithCancellation(token))
                    {
                        lock (_received)
                        {
                            _received.Add(System.Diagnostics.Stopwatch.GetTimestamp());
                        }
                        await _pages.Writer.WriteAsync(page, token);
                    }
                    _pages.Writer.Complete();
                }
                catch (Exception e)
                {
                    _pages.Writer.Complete(e);
                }
            }, CancellationToken.None);
        }

        /// <summary>When the stream delivered its last page before <paramref name="timestamp"/>
        /// (<see cref="System.Diagnostics.Stopwatch.GetTimestamp"/>).</summary>
        public long LastPageBefore(long timestamp)
        {
            lock (_received)
            {
                return _received.Where(t => t < timestamp).DefaultIfEmpty().Max();
            }
        }

        /// <summary>The next page; fails if the stream ended or failed.</summary>
        public async Task<PartitionPage> NextAsync(CancellationToken cancellationToken) =>
            await _pages.Reader.ReadAsync(cancellationToken);

        /// <summary>Takes pages until <paramref name="events"/> holds <paramref name="count"/> events,
        /// failing if more come in the same page.</summary>
        public async Task<string> CollectAsync(List<EventRecord> events, int count, CancellationToken cancellationToken)
        {
            var cursor = "";
            while (events.Count < count)
            {
                var page = await NextAsync(cancellationToken);
                events.AddRange(page.Events);
                cursor = page.Cursor;
            }
            Assert.Equal(count, events.Count);
            return cursor;
        }

        /// <inheritdoc />
        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            await _reading;
            _stop.Dispose();
        }
    }

    /// <summary>A client of a hub that logs into a <see cref="LogRecorder"/> of its own, at Debug, so
    /// that the gRPC library's "StartingCall" entries count the tries.</summary>
    public sealed class RecordedClient : IAsyncDisposable
    {
        private readonly ILoggerFactory _loggers;

        public RecordedClient(string address, RetryPolicy? retry = null)
        {
            var log = new LogRecorder();
            _loggers = LoggerFactory.Create(b => b.AddProvider(log).SetMinimumLevel(LogLevel.Debug));
            Log = log;
            Client = new EventHubClient(new EventHubClientSettings { Address = address, LoggerFactory = _loggers, Retry = retry ?? RetryPolicy.Default });
        }

        public LogRecorder Log { get; }

        public EventHubClient Client { get; }

        public async ValueTask DisposeAsync()
        {
            await Client.DisposeAsync();
            _loggers.Dispose();
        }
    }

    /// <summary>One log entry.</summary>
    public sealed record LogEntry(string Category, LogLevel Level, EventId EventId, string Message)
    {
        /// <summary>When it was logged (<see cref="System.Diagnostics.Stopwatch.GetTimestamp"/>).</summary>
        public long Timestamp { get; } = System.Diagnostics.Stopwatch.GetTimestamp();
    }

    /// <summary>An <see cref="ILoggerProvider"/> that records every entry and lets a test await one.</summary>
    public sealed class LogRecorder : ILoggerProvider
    {
        /// <summary>The category of the client's own log lines.</summary>
        public static readonly string ClientCategory = typeof(EventHubClient).FullName!;

        private readonly List<LogEntry> _entries = [];
        private readonly List<Waiter> _waiters = [];

        /// <summary>Every entry so far.</summary>
        public IReadOnlyList<LogEntry> Entries
        {
            get
            {
                lock (_entries)
                {
                    return _entries.ToArray();
                }
            }
        }

        /// <summary>The <see cref="Consumer"/>'s entries at <paramref name="level"/> so far.</summary>
        public List<LogEntry> Consumer(LogLevel level) =>
            Entries.Where(e => e.Category == typeof(Consumer).FullName && e.Level == level).ToList();

        /// <summary>Every entry so far, a line each, for failure messages.</summary>
        public string Dump() => string.Join("\n", Entries.Select(e => $"{e.Level} {e.Category}[{e.EventId.Id}] {e.Message}"));

        /// <summary>The client's own entries (not the gRPC library's) so far.</summary>
        public IReadOnlyList<LogEntry> ClientEntries => Entries.Where(e => e.Category == ClientCategory).ToArray();

        /// <summary>How many calls of the gRPC method <paramref name="method"/> (e.g. "Append") the
        /// channel started, each try counted: Grpc.Net.Client logs one "StartingCall" (Debug) per
        /// call it sends, with its URI.</summary>
        public int Attempts(string method) => Entries.Count(e => IsAttempt(e, method));

        private static bool IsAttempt(LogEntry e, string method) =>
            e.EventId.Name == "StartingCall" && e.Message.Contains($"/eventhub.v1.EventHubService/{method}'", StringComparison.Ordinal);

        /// <summary>The <paramref name="count"/>-th entry (recorded so far or later) that matches.</summary>
        public Task<LogEntry> WaitForAsync(Func<LogEntry, bool> match, CancellationToken cancellationToken, int count = 1)
        {
            lock (_entries)
            {
                var found = _entries.Where(match).Take(count).ToList();
                if (found.Count == count)
                {
                    return Task.FromResult(found[^1]);
                }
                var waiter = new Waiter(match, count - found.Count);
                _waiters.Add(waiter);
                cancellationToken.Register(() => waiter.Done.TrySetCanceled(cancellationToken));
                return waiter.Done.Task;
            }
        }

        /// <summary>The <paramref name="count"/>-th call of <paramref name="method"/> the channel
        /// started (see <see cref="Attempts"/>).</summary>
        public Task<LogEntry> WaitForAttemptAsync(string method, int count, CancellationToken cancellationToken) =>
            WaitForAsync(e => IsAttempt(e, method), cancellationToken, count);

        /// <inheritdoc />
        public ILogger CreateLogger(string categoryName) => new Recorder(this, categoryName);

        /// <inheritdoc />
        public void Dispose()
        {
        }

        private void Add(LogEntry entry)
        {
            lock (_entries)
            {
                _entries.Add(entry);
                foreach (var waiter in _waiters.Where(w => w.Match(entry)).ToArray())
                {
                    if (--waiter.Remaining == 0)
                    {
                        waiter.Done.TrySetResult(entry);
                        _waiters.Remove(waiter);
                    }
                }
            }
        }

        private sealed class Waiter(Func<LogEntry, bool> match, int remaining)
        {
            public Func<LogEntry, bool> Match { get; } = match;

            public int Remaining { get; set; } = remaining;

            public TaskCompletionSource<LogEntry> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        }

        private sealed class Recorder(LogRecorder owner, string category) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state)
                where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
                owner.Add(new LogEntry(category, logLevel, eventId, formatter(state, exception)));
        }
    }

    /// <summary>
    /// The HTTP handler of a client's channel (a <see cref="SocketsHttpHandler"/>) with two windows
    /// on its calls: how many requests of each gRPC method went out, and when the hub answered a
    /// method's request with response headers (the hub has taken the call; for ReadPartition it
    /// has resolved the cursor).
    /// </summary>
    public sealed class CallProbe() : DelegatingHandler(new SocketsHttpHandler { EnableMultipleHttp2Connections = true })
    {
        private readonly ConcurrentDictionary<string, int> _requests = new();
        private readonly ConcurrentDictionary<string, TaskCompletionSource> _answered = new();

        /// <summary>The requests of <paramref name="method"/> (e.g. "Append") sent so far.</summary>
        public int Requests(string method) => _requests.GetValueOrDefault(method);

        /// <summary>Completes once the hub has sent the response headers of a request of
        /// <paramref name="method"/>.</summary>
        public Task Answered(string method) => Signal(method).Task;

        /// <inheritdoc />
        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            var method = request.RequestUri!.AbsolutePath.Split('/')[^1];
            _requests.AddOrUpdate(method, 1, (_, n) => n + 1);
            var response = await base.SendAsync(request, cancellationToken);
            Signal(method).TrySetResult();
            return response;
        }

        private TaskCompletionSource Signal(string method) =>
            _answered.GetOrAdd(method, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
    }
}
