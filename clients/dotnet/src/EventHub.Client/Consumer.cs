using System.Data.Common;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace EventHub.Client;

/// <summary>Applies one page of events inside <paramref name="transaction"/>, an open transaction
/// on the consumer's connection. Do not commit or roll it back: the consumer stores the page's
/// cursor in it and commits when the handler returns, or rolls back when it throws.</summary>
/// <param name="page">The page: events in sequence order, never empty.</param>
/// <param name="transaction">The open transaction on the consumer's connection.</param>
/// <param name="cancellationToken">The token the consumer runs with.</param>
public delegate Task PageHandler(PartitionPage page, DbTransaction transaction, CancellationToken cancellationToken);

/// <summary>Where a consumer with no stored cursor for a partition starts.</summary>
public enum ConsumerStart
{
    /// <summary>At the first event.</summary>
    First,

    /// <summary>At the head as of the first run (stored at once, so a restart does not skip ahead).</summary>
    Last,
}

/// <summary>What a <see cref="Consumer"/> reads and how.</summary>
public sealed record ConsumerOptions
{
    /// <summary>The topic to read; it must exist.</summary>
    public required string Topic { get; init; }

    /// <summary>The consumer group: the name the cursors are stored under. Consumers of one group
    /// share progress; give each projection its own.</summary>
    public required string Group { get; init; }

    /// <summary>The partitions to read; <see langword="null"/> reads them all.</summary>
    public IReadOnlyCollection<int>? Partitions { get; init; }

    /// <summary>Where a partition with no stored cursor starts.</summary>
    public ConsumerStart Start { get; init; } = ConsumerStart.First;

    /// <summary>Most events per page (and so per transaction).</summary>
    public int MaxEvents { get; init; } = 100;

    /// <summary>When not empty, only events of these types, and invalidation markers (which are
    /// always delivered, so that the handler can undo the effects of an invalidated transaction).</summary>
    public IReadOnlyCollection<string>? Types { get; init; }

    /// <summary>The hub's heartbeat on idle partitions (zero: the hub's default of 5 seconds); a
    /// partition silent for three heartbeats is read again.</summary>
    public TimeSpan Heartbeat { get; init; }

    /// <summary>How failures to reach the hub are retried; by default without end, so that the
    /// consumer outlives restarts and outages of the hub. With a bounded policy, the run throws
    /// <see cref="UnavailableException"/> after that many failures in a row.</summary>
    public RetryPolicy Retry { get; init; } = RetryPolicy.Forever;

    /// <summary>Create the cursor table (<see cref="CursorTable"/>) if it does not exist.</summary>
    public bool CreateTable { get; init; } = true;
}

/// <summary>
/// Reads every partition of a topic (or a chosen set) and applies each page of events exactly once
/// to your database: it calls your <see cref="PageHandler"/> with the page and an open transaction
/// on your <see cref="DbConnection"/>, then writes the partition's cursor in that same transaction
/// and commits. The effects of a page and the cursor after it are stored together or not at all,
/// so after a crash the consumer resumes right after the last committed page.
/// </summary>
/// <remarks>
/// One task per partition reads; the handler and the transactions run one at a time on the task
/// that awaits <see cref="RunAsync(CancellationToken)"/>, so a single connection is enough (it must stay open and is
/// used by nothing else meanwhile). A handler that throws rolls its page back and the run throws
/// it. Invalidation markers are always delivered. When the hub is unavailable, ends a stream, or
/// sends nothing for three heartbeats, the partition is read again from its last cursor; one
/// warning is logged when the consumer loses the hub and one information line when it is back.
/// A cursor that another consumer of the same group moved meanwhile throws
/// <see cref="CursorConflictException"/> (nothing is applied twice).
/// </remarks>
public sealed class Consumer
{
    private readonly EventHubClient _client;
    private readonly DbConnection _connection;
    private readonly ConsumerOptions _options;
    private readonly PageHandler _handler;
    private readonly ILogger _logger;
    private readonly IReadOnlyCollection<string>? _types;

    /// <summary>A consumer of <see cref="ConsumerOptions.Topic"/> that applies pages to
    /// <paramref name="connection"/> (open it first) with <paramref name="handler"/>.</summary>
    /// <param name="client">The hub.</param>
    /// <param name="connection">Your open database connection; the cursors are stored there.</param>
    /// <param name="options">What to read.</param>
    /// <param name="handler">Applies a page inside the given transaction.</param>
    /// <param name="logger">Where to log; by default the client's logger factory, else nowhere.</param>
    public Consumer(EventHubClient client, DbConnection connection, ConsumerOptions options, PageHandler handler, ILogger<Consumer>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(connection);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(handler);
        ArgumentException.ThrowIfNullOrEmpty(options.Topic);
        ArgumentException.ThrowIfNullOrEmpty(options.Group);
        ArgumentOutOfRangeException.ThrowIfNegative(options.MaxEvents);
        if (options.Partitions is { Count: 0 })
        {
            throw new ArgumentException("Partitions is empty; leave it null to read every partition", nameof(options));
        }
        if (options.Partitions?.Any(p => p < 0) == true)
        {
            throw new ArgumentException("a partition number is negative", nameof(options));
        }
        _client = client;
        _connection = connection;
        _options = options;
        _handler = handler;
        _logger = (ILogger?)logger ?? client.Settings.LoggerFactory?.CreateLogger<Consumer>() ?? NullLogger<Consumer>.Instance;
        if (options.Types is { Count: > 0 } types)
        {
            _types = types.Contains(EventRecord.InvalidationType) ? types : [.. types, EventRecord.InvalidationType];
        }
    }

    /// <summary>Applies pages as events commit, until <paramref name="cancellationToken"/> is
    /// cancelled; then it returns (after the page being applied commits or rolls back).</summary>
    /// <exception cref="NotFoundException">The topic does not exist.</exception>
    /// <exception cref="CursorConflictException">Another consumer of the group moved a cursor.</exception>
    public Task RunAsync(CancellationToken cancellationToken = default) => RunAsync(follow: true, cancellationToken);

    /// <summary>Applies pages until every partition has been read up to its head as of when it was
    /// reached, then returns: for batch jobs and tests.</summary>
    /// <exception cref="NotFoundException">The topic does not exist.</exception>
    /// <exception cref="CursorConflictException">Another consumer of the group moved a cursor.</exception>
    public Task RunUntilCaughtUpAsync(CancellationToken cancellationToken = default) => RunAsync(follow: false, cancellationToken);

    private async Task RunAsync(bool follow, CancellationToken cancellationToken)
    {
        var outage = new Outage(this);
        try
        {
            var cursors = await LoadCursorsAsync(outage, cancellationToken).ConfigureAwait(false);
            await ConsumeAsync(cursors, follow, outage, cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Stopping is what the token is for.
        }
    }

    private async Task<Dictionary<int, string?>> LoadCursorsAsync(Outage outage, CancellationToken cancellationToken)
    {
        if (_options.CreateTable)
        {
            await CursorTable.CreateAsync(_connection, cancellationToken).ConfigureAwait(false);
        }
        TopicInfo? topic = null;
        if (_options.Partitions is null || _options.Start == ConsumerStart.Last)
        {
            for (var failures = 0; topic is null;)
            {
                try
                {
                    topic = await _client.GetTopicAsync(_options.Topic, RetryPolicy.None, cancellationToken).ConfigureAwait(false);
                    outage.Recovered();
                }
                catch (UnavailableException e)
                {
                    await outage.BackoffAsync(e, failures++, "GetTopic", cancellationToken).ConfigureAwait(false);
                }
            }
        }
        var partitions = _options.Partitions?.Distinct().Order().ToArray() ?? Enumerable.Range(0, topic!.PartitionCount).ToArray();
        if (topic is not null && partitions.FirstOrDefault(p => p >= topic.PartitionCount, -1) is var outside and >= 0)
        {
            throw new ArgumentException($"topic '{_options.Topic}' has {topic.PartitionCount} partitions; there is no partition {outside}");
        }
        var cursors = new Dictionary<int, string?>();
        await using var transaction = await _connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        foreach (var partition in partitions)
        {
            var cursor = await CursorTable.LoadAsync(transaction, _options.Group, _options.Topic, partition, cancellationToken).ConfigureAwait(false);
            if (cursor is null && topic is not null && _options.Start == ConsumerStart.Last)
            {
                cursor = topic.Partitions[partition].HeadCursor;
                await CursorTable.SaveAsync(transaction, _options.Group, _options.Topic, partition, null, cursor, cancellationToken).ConfigureAwait(false);
            }
            cursors[partition] = cursor;
        }
        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
        return cursors;
    }

    private async Task ConsumeAsync(Dictionary<int, string?> cursors, bool follow, Outage outage, CancellationToken cancellationToken)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var pages = Channel.CreateBounded<PartitionPage>(new BoundedChannelOptions(4 * cursors.Count) { SingleReader = true });
        var readers = cursors.Select(c => ReadOrStopAllAsync(c.Key, c.Value ?? Cursors.First, follow, pages.Writer, outage, stop)).ToArray();
        var done = Task.WhenAll(readers).ContinueWith(
            _ => pages.Writer.TryComplete(),
            CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Default);
        try
        {
            await foreach (var page in pages.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                cursors[page.Partition] = await ApplyAsync(page, cursors[page.Partition], cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            await stop.CancelAsync().ConfigureAwait(false);
            await done.ConfigureAwait(false);
        }
        // A reader that failed for good (an unknown topic, a bounded retry policy given up) ends the
        // run with its error; the other readers were stopped with it.
        var failed = readers.FirstOrDefault(r => r.IsFaulted && r.Exception!.InnerException is not OperationCanceledException);
        if (failed is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failed.Exception!.InnerException!);
        }
    }

    private async Task<string?> ApplyAsync(PartitionPage page, string? previous, CancellationToken cancellationToken)
    {
        if (page.IsEmpty && page.Cursor == (previous ?? Cursors.First))
        {
            return previous;
        }
        await using var transaction = await _connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        if (!page.IsEmpty)
        {
            await _handler(page, transaction, cancellationToken).ConfigureAwait(false);
        }
        // Once the handler has run, the page is committed even if the run is being stopped.
        await CursorTable.SaveAsync(transaction, _options.Group, _options.Topic, page.Partition, previous, page.Cursor, CancellationToken.None).ConfigureAwait(false);
        await transaction.CommitAsync(CancellationToken.None).ConfigureAwait(false);
        return page.Cursor;
    }

    private async Task ReadOrStopAllAsync(int partition, string cursor, bool follow, ChannelWriter<PartitionPage> pages, Outage outage, CancellationTokenSource stop)
    {
        try
        {
            await ReadAsync(partition, cursor, follow, pages, outage, stop.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException e) when (!stop.IsCancellationRequested)
        {
            // Nobody stopped the run, yet the read reports itself cancelled (the transport does, in
            // some failures): end the run with an error rather than leave the partition unread, or
            // return as if stopped.
            await stop.CancelAsync().ConfigureAwait(false);
            throw new UnavailableException($"reading partition {partition} of topic '{_options.Topic}' was cancelled, though the consumer was not stopped: {e.Message}", null, e);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            await stop.CancelAsync().ConfigureAwait(false);
            throw;
        }
    }

    private async Task ReadAsync(int partition, string cursor, bool follow, ChannelWriter<PartitionPage> pages, Outage outage, CancellationToken cancellationToken)
    {
        var observer = new PartitionObserver(outage, partition);
        if (follow)
        {
            var options = new FollowOptions { MaxEvents = _options.MaxEvents, Heartbeat = _options.Heartbeat, Types = _types, Retry = _options.Retry };
            await foreach (var page in _client.Follow(_options.Topic, partition, cursor, options, observer, cancellationToken).ConfigureAwait(false))
            {
                await pages.WriteAsync(page, cancellationToken).ConfigureAwait(false);
            }
            return;
        }
        // Until caught up: read again (from the last cursor) until a stream ends at the head.
        for (var failures = 0; ;)
        {
            var options = new ReadOptions { MaxEvents = _options.MaxEvents, Types = _types, Retry = RetryPolicy.None };
            var caughtUp = false;
            try
            {
                await foreach (var page in _client.ReadPartitionAsync(_options.Topic, partition, cursor, options, cancellationToken).ConfigureAwait(false))
                {
                    observer.Recovered();
                    failures = 0;
                    cursor = page.Cursor;
                    caughtUp = page.CaughtUp;
                    await pages.WriteAsync(page, cancellationToken).ConfigureAwait(false);
                }
                if (caughtUp)
                {
                    return;
                }
            }
            catch (UnavailableException e)
            {
                // Named as the observer names it, so that its recovery ends this outage.
                await outage.BackoffAsync(e, failures++, PartitionObserver.Name(partition), cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Whether any partition has lost the hub, so that an outage is logged once when it
    /// begins and once when every partition reads again, not once per retry per partition.</summary>
    private sealed class Outage(Consumer consumer)
    {
        private readonly HashSet<string> _lost = [];

        internal void Failed(string where, EventHubException error, int failures, TimeSpan delay)
        {
            bool first;
            lock (_lost)
            {
                first = _lost.Count == 0;
                _lost.Add(where);
            }
            if (first)
            {
                Log.ConsumerLost(consumer._logger, consumer._options.Group, consumer._options.Topic, error.Message);
            }
            Log.ConsumerRetry(consumer._logger, consumer._options.Group, consumer._options.Topic, where, error.Message, failures, delay);
        }

        internal void Recovered(string where = "GetTopic")
        {
            bool last;
            lock (_lost)
            {
                last = _lost.Remove(where) && _lost.Count == 0;
            }
            if (last)
            {
                Log.ConsumerBack(consumer._logger, consumer._options.Group, consumer._options.Topic);
            }
        }

        /// <summary>After failure number <paramref name="failures"/> (0-based) in a row: throws
        /// <paramref name="error"/> if the retry policy gives up, else logs and waits.</summary>
        internal async Task BackoffAsync(EventHubException error, int failures, string where, CancellationToken cancellationToken)
        {
            var retry = consumer._options.Retry;
            if (!retry.AllowsRetry(failures))
            {
                throw error;
            }
            var delay = retry.Backoff(failures);
            Failed(where, error, failures + 1, delay);
            await Task.Delay(delay, cancellationToken).ConfigureAwait(false);
        }
    }

    private sealed class PartitionObserver(Outage outage, int partition) : IStreamObserver
    {
        private readonly string _where = Name(partition);

        internal static string Name(int partition) => $"partition {partition}";

        public void Failed(EventHubException error, int failures, TimeSpan delay) => outage.Failed(_where, error, failures, delay);

        public void Recovered() => outage.Recovered(_where);
    }
}
