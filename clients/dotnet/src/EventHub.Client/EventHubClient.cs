using System.Runtime.CompilerServices;
using Grpc.Core;
using Grpc.Net.Client;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Proto = EventHub.V1;

namespace EventHub.Client;

/// <summary>
/// A client of an eventhub server. Make one per hub and share it: it is thread-safe, holds one
/// HTTP/2 channel for its whole life, and is disposed with the application.
/// </summary>
/// <remarks>
/// Every call is async and takes a trailing <see cref="CancellationToken"/>; cancelling it throws
/// <see cref="OperationCanceledException"/>. A failed call throws an
/// <see cref="EventHubException"/> subclass named after its status (the API reference is the
/// proto's comments). Calls that fail with UNAVAILABLE are retried as
/// <see cref="EventHubClientSettings.Retry"/> says, an Append only when every event has an event
/// id; a read stream is reopened right after the last page it delivered.
/// </remarks>
public sealed class EventHubClient : IAsyncDisposable, IDisposable
{
    private readonly GrpcChannel _channel;
    private readonly Proto.EventHubService.EventHubServiceClient _stub;
    private readonly Metadata? _headers;
    private readonly ILogger _logger;

    /// <summary>A client of the hub at <paramref name="address"/> (<c>http://host:port</c>, or
    /// <c>host:port</c>), with the default settings otherwise.</summary>
    public EventHubClient(string address)
        : this(new EventHubClientSettings { Address = address })
    {
    }

    /// <summary>A client with the given <paramref name="settings"/>.</summary>
    public EventHubClient(EventHubClientSettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        Settings = settings;
        var options = new GrpcChannelOptions
        {
            HttpHandler = settings.HttpMessageHandlerFactory?.Invoke() ?? DefaultHandler(),
            DisposeHttpClient = true,
            ThrowOperationCanceledOnCancellation = true,
            LoggerFactory = settings.LoggerFactory,
            // Pages are at most about 3 MiB (the proto's limit); leave room above it.
            MaxReceiveMessageSize = 16 * 1024 * 1024,
            MaxSendMessageSize = null,
        };
        _channel = GrpcChannel.ForAddress(settings.AddressUri(), options);
        _stub = new Proto.EventHubService.EventHubServiceClient(_channel);
        if (settings.Token is { } token)
        {
            _headers = new Metadata { { "authorization", "Bearer " + token } };
        }
        _logger = settings.LoggerFactory?.CreateLogger<EventHubClient>() ?? NullLogger<EventHubClient>.Instance;
    }

    /// <summary>The settings this client was made with.</summary>
    public EventHubClientSettings Settings { get; }

    private static SocketsHttpHandler DefaultHandler() => new()
    {
        // A peer that vanished without a word (a dropped NAT entry, a dead machine) is noticed
        // within 30 seconds instead of the operating system's many minutes.
        KeepAlivePingDelay = TimeSpan.FromSeconds(20),
        KeepAlivePingTimeout = TimeSpan.FromSeconds(10),
        KeepAlivePingPolicy = HttpKeepAlivePingPolicy.WithActiveRequests,
        EnableMultipleHttp2Connections = true,
        PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
        ConnectTimeout = TimeSpan.FromSeconds(10),
    };

    /// <summary>
    /// Appends <paramref name="events"/> to <paramref name="topic"/> as one transaction: all of them
    /// commit, or none does. Once it returns the events are durable. An unknown topic is created
    /// with the hub's default partition count (unless the hub runs with auto-create off).
    /// </summary>
    /// <param name="topic">The topic name.</param>
    /// <param name="events">The events, stored in this order.</param>
    /// <param name="dedupByContent">When true, an event whose key's latest valid event has the same
    /// type, content type, headers and payload is not stored again (outcome
    /// <see cref="AppendOutcome.DuplicateContent"/>).</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <exception cref="KeyVersionConflictException">An expected key version did not hold.</exception>
    /// <exception cref="InvalidArgumentException">A bad name, key, type or header, an empty or
    /// oversized event, a reserved name, or the same event id twice.</exception>
    public async Task<AppendResult> AppendAsync(string topic, IEnumerable<EventData> events, bool dedupByContent = false, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(events);
        var request = new Proto.AppendRequest { Topic = topic ?? "", DedupByContent = dedupByContent };
        request.Events.AddRange(events.Select(Mapping.ToProto));
        // Retrying is safe only when the hub can recognise a second copy of every event.
        var retryable = request.Events.All(e => e.EventId.Length > 0);
        var response = await UnaryAsync(_stub.AppendAsync, request, retryable, null, cancellationToken).ConfigureAwait(false);
        return Mapping.FromProto(response);
    }

    /// <summary>Appends one event (see the overload for many).</summary>
    public Task<AppendResult> AppendAsync(string topic, EventData @event, bool dedupByContent = false, CancellationToken cancellationToken = default) =>
        AppendAsync(topic, [@event], dedupByContent, cancellationToken);

    /// <summary>
    /// Reads one partition from <paramref name="cursor"/>: pages of events in sequence order until
    /// the reader has caught up with the head, then the sequence ends. If nothing is past the
    /// cursor it first waits up to <see cref="ReadOptions.Wait"/> for an event (long-poll) and, if
    /// none commits, yields one empty page with the cursor unchanged. Each page's
    /// <see cref="PartitionPage.Cursor"/> is the checkpoint to store.
    /// </summary>
    /// <exception cref="NotFoundException">The topic does not exist.</exception>
    /// <exception cref="InvalidArgumentException">The partition is out of range or the cursor is
    /// malformed or of another topic or partition.</exception>
    /// <exception cref="OutOfRangeException">The cursor is past the partition's last stored event.</exception>
    public IAsyncEnumerable<PartitionPage> ReadPartitionAsync(string topic, int partition, string cursor = Cursors.First, ReadOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new ReadOptions();
        var request = PartitionRequest(topic, partition, cursor, options.MaxEvents, options.Types);
        request.WaitMs = Milliseconds(options.Wait, nameof(options.Wait));
        return Pages(request, options.Retry ?? Settings.Retry, silence: null, observer: null, cancellationToken);
    }

    /// <summary>
    /// Follows one partition from <paramref name="cursor"/>: pages as events commit, for as long as
    /// you read (cancel the token or leave the <c>await foreach</c> to stop). When nothing commits,
    /// an empty heartbeat page comes at least every <see cref="FollowOptions.Heartbeat"/>, so an
    /// idle consumer can still store its cursor and knows the stream is alive.
    /// </summary>
    /// <remarks>When the hub is unavailable, ends the stream (it does when it shuts down), or sends
    /// nothing for three heartbeats, the stream is reopened right after the last page it
    /// delivered, as the retry policy allows.</remarks>
    /// <exception cref="NotFoundException">The topic does not exist.</exception>
    /// <exception cref="InvalidArgumentException">The partition is out of range or the cursor is
    /// malformed or of another topic or partition.</exception>
    public IAsyncEnumerable<PartitionPage> FollowAsync(string topic, int partition, string cursor = Cursors.Last, FollowOptions? options = null, CancellationToken cancellationToken = default) =>
        Follow(topic, partition, cursor, options, observer: null, cancellationToken);

    internal IAsyncEnumerable<PartitionPage> Follow(string topic, int partition, string cursor, FollowOptions? options, IStreamObserver? observer, CancellationToken cancellationToken)
    {
        options ??= new FollowOptions();
        var request = PartitionRequest(topic, partition, cursor, options.MaxEvents, options.Types);
        request.Follow = true;
        request.HeartbeatMs = Milliseconds(options.Heartbeat, nameof(options.Heartbeat));
        return Pages(request, options.Retry ?? Settings.Retry, SilenceOf(options.Heartbeat), observer, cancellationToken);
    }

    /// <summary>How long a follow stream may send nothing, not even a heartbeat, before it is taken
    /// for dead: three heartbeats (the hub's default is 5 seconds, and it sends none more often than
    /// every 50 milliseconds).</summary>
    internal static TimeSpan SilenceOf(TimeSpan heartbeat)
    {
        var ms = heartbeat <= TimeSpan.Zero ? 5000 : Math.Max(50, heartbeat.TotalMilliseconds);
        return TimeSpan.FromMilliseconds(3 * ms);
    }

    private async IAsyncEnumerable<PartitionPage> Pages(Proto.ReadPartitionRequest request, RetryPolicy retry, TimeSpan? silence, IStreamObserver? observer, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var what = $"ReadPartition of topic '{request.Topic}', partition {request.Partition}";
        await foreach (var page in StreamAsync(_stub.ReadPartition, request, ResumeReadPartition, retry, silence, observer, what, cancellationToken).ConfigureAwait(false))
        {
            yield return Mapping.FromProto(page);
        }
    }

    /// <summary>
    /// The latest valid event of every key (like a compacted log), sorted by key, in pages. Every
    /// page carries the per-partition cursors at which the snapshot was taken: read each partition
    /// from there to continue with no gap and no overlap. Keys whose latest valid event is a
    /// tombstone are left out; invalidated events are ignored.
    /// </summary>
    /// <exception cref="NotFoundException">The topic does not exist.</exception>
    /// <exception cref="InvalidArgumentException"><see cref="SurfaceOptions.AsOfTransaction"/> is
    /// after the topic's last transaction.</exception>
    public async IAsyncEnumerable<SurfacePage> SurfaceAsync(string topic, SurfaceOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        options ??= new SurfaceOptions();
        ArgumentOutOfRangeException.ThrowIfNegative(options.Limit);
        var request = new Proto.SurfaceRequest
        {
            Topic = topic ?? "",
            KeyPrefix = options.KeyPrefix ?? "",
            AfterKey = options.AfterKey ?? "",
            Limit = (uint)options.Limit,
            AsOfTransaction = options.AsOfTransaction,
        };
        var what = $"Surface of topic '{request.Topic}'";
        await foreach (var page in StreamAsync(_stub.Surface, request, ResumeSurface, Settings.Retry, null, null, what, cancellationToken).ConfigureAwait(false))
        {
            yield return Mapping.FromProto(page);
        }
    }

    /// <summary>
    /// One key's events in key-version order, invalidated ones included and marked, in pages: for
    /// loading an aggregate before appending with <see cref="ExpectedVersion.Exact"/>. An unknown key
    /// is not an error: one page with no events and <see cref="KeyPage.CurrentVersion"/> 0.
    /// </summary>
    /// <param name="topic">The topic name.</param>
    /// <param name="key">The key.</param>
    /// <param name="fromVersion">The first key version to return; 0 and 1 both mean from the start.</param>
    /// <param name="maxEvents">Most events per page; 0 means the hub's default of 100.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <exception cref="NotFoundException">The topic does not exist.</exception>
    public async IAsyncEnumerable<KeyPage> ReadKeyAsync(string topic, string key, ulong fromVersion = 0, int maxEvents = 0, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxEvents);
        var request = new Proto.ReadKeyRequest { Topic = topic ?? "", Key = key ?? "", FromVersion = fromVersion, MaxEvents = (uint)maxEvents };
        var what = $"ReadKey of topic '{request.Topic}'";
        await foreach (var page in StreamAsync(_stub.ReadKey, request, ResumeReadKey, Settings.Retry, null, null, what, cancellationToken).ConfigureAwait(false))
        {
            yield return Mapping.FromProto(page);
        }
    }

    /// <summary>
    /// Marks a committed transaction invalid without deleting anything: one marker event (type
    /// <see cref="EventRecord.InvalidationType"/>) is appended to every partition holding events of that
    /// transaction, and Surface ignores them from then on. Invalidating it again changes nothing and
    /// returns the first markers.
    /// </summary>
    /// <exception cref="NotFoundException">An unknown topic or transaction.</exception>
    /// <exception cref="InvalidArgumentException">No reason, or the transaction is itself an invalidation.</exception>
    public async Task<InvalidateResult> InvalidateAsync(string topic, ulong transactionId, string reason, CancellationToken cancellationToken = default)
    {
        var request = new Proto.InvalidateRequest { Topic = topic ?? "", TransactionId = transactionId, Reason = reason ?? "" };
        // Idempotent: invalidating twice returns the first markers.
        var response = await UnaryAsync(_stub.InvalidateAsync, request, true, null, cancellationToken).ConfigureAwait(false);
        return Mapping.FromProto(response);
    }

    /// <summary>Creates a topic with a fixed number of partitions (1–1024; 0 means the hub's
    /// default). Creating a topic that exists with the same count returns it with
    /// <see cref="CreateTopicResult.Created"/> false.</summary>
    /// <exception cref="AlreadyExistsException">The topic exists with another partition count.</exception>
    public async Task<CreateTopicResult> CreateTopicAsync(string name, int partitionCount = 0, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(partitionCount);
        var request = new Proto.CreateTopicRequest { Name = name ?? "", PartitionCount = (uint)partitionCount };
        var response = await UnaryAsync(_stub.CreateTopicAsync, request, true, null, cancellationToken).ConfigureAwait(false);
        return new CreateTopicResult(Mapping.FromProto(response.Topic), response.Created);
    }

    /// <summary>Describes one topic: its partitions with their head cursors and event counts.</summary>
    /// <exception cref="NotFoundException">The topic does not exist.</exception>
    public Task<TopicInfo> GetTopicAsync(string name, CancellationToken cancellationToken = default) =>
        GetTopicAsync(name, null, cancellationToken);

    internal async Task<TopicInfo> GetTopicAsync(string name, RetryPolicy? retry, CancellationToken cancellationToken)
    {
        var request = new Proto.GetTopicRequest { Name = name ?? "" };
        var response = await UnaryAsync(_stub.GetTopicAsync, request, true, retry, cancellationToken).ConfigureAwait(false);
        return Mapping.FromProto(response.Topic);
    }

    /// <summary>Every topic whose name starts with <paramref name="namePrefix"/>, sorted by name,
    /// fetched a page at a time (<paramref name="pageSize"/> topics, 0 meaning the hub's default of
    /// 100). With a token, only the topics it may read.</summary>
    public async IAsyncEnumerable<TopicInfo> ListTopicsAsync(string namePrefix = "", int pageSize = 0, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(pageSize);
        var after = "";
        while (true)
        {
            var request = new Proto.ListTopicsRequest { NamePrefix = namePrefix ?? "", AfterName = after, Limit = (uint)pageSize };
            var response = await UnaryAsync(_stub.ListTopicsAsync, request, true, null, cancellationToken).ConfigureAwait(false);
            foreach (var topic in response.Topics)
            {
                yield return Mapping.FromProto(topic);
            }
            if (response.NextAfterName.Length == 0)
            {
                yield break;
            }
            after = response.NextAfterName;
        }
    }

    /// <inheritdoc />
    public void Dispose() => _channel.Dispose();

    /// <inheritdoc />
    public ValueTask DisposeAsync()
    {
        _channel.Dispose();
        return ValueTask.CompletedTask;
    }

    private CallOptions Options(TimeSpan? deadline, CancellationToken cancellationToken) =>
        new(_headers, deadline is { } d ? DateTime.UtcNow + d : null, cancellationToken);

    private async Task<TResponse> UnaryAsync<TRequest, TResponse>(
        Func<TRequest, CallOptions, AsyncUnaryCall<TResponse>> method,
        TRequest request,
        bool retryable,
        RetryPolicy? retry,
        CancellationToken cancellationToken)
    {
        retry ??= Settings.Retry;
        for (var attempt = 0; ; attempt++)
        {
            try
            {
                using var call = method(request, Options(Settings.DefaultDeadline, cancellationToken));
                return await call.ResponseAsync.ConfigureAwait(false);
            }
            catch (RpcException e) when (retryable && (e.StatusCode == StatusCode.Unavailable || LostConnection(e)) && retry.AllowsRetry(attempt))
            {
                await Task.Delay(retry.Backoff(attempt), cancellationToken).ConfigureAwait(false);
            }
            catch (RpcException e) when (LostConnection(e))
            {
                // The hub may or may not have done what was asked: for an Append, only event ids
                // make trying again safe, so the caller decides.
                throw new UnavailableException($"the connection to the hub was lost during the call, which may or may not have taken effect: {e.Status.Detail}", e.Trailers, e);
            }
            catch (RpcException e)
            {
                throw EventHubException.From(e);
            }
        }
    }

    /// <summary>
    /// The responses of a server stream, reopened (with <paramref name="resume"/>'s request, right
    /// after the last response delivered) when it fails with UNAVAILABLE and, when
    /// <paramref name="silence"/> is set (a follow stream), when it ends or sends nothing for that
    /// long. Without an <paramref name="observer"/>, the first failure of a run is logged as a
    /// warning and the recovery as information.
    /// </summary>
    private async IAsyncEnumerable<TResponse> StreamAsync<TRequest, TResponse>(
        Func<TRequest, CallOptions, AsyncServerStreamingCall<TResponse>> open,
        TRequest request,
        Func<TRequest, TResponse, TRequest?> resume,
        RetryPolicy retry,
        TimeSpan? silence,
        IStreamObserver? observer,
        string what,
        [EnumeratorCancellation] CancellationToken cancellationToken)
        where TRequest : class
    {
        var next = request;
        var failures = 0;
        var lost = false;
        while (next is not null)
        {
            using var watchdog = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            using var call = open(next, Options(null, watchdog.Token));
            EventHubException? failure = null;
            while (true)
            {
                if (silence is { } s)
                {
                    watchdog.CancelAfter(s);
                }
                TResponse response;
                try
                {
                    if (!await call.ResponseStream.MoveNext(watchdog.Token).ConfigureAwait(false))
                    {
                        if (silence is null)
                        {
                            next = null;
                        }
                        else
                        {
                            // A follow stream ends only when the hub shuts down: read on elsewhere.
                            failure = new UnavailableException("the hub ended the stream");
                        }
                        break;
                    }
                    response = call.ResponseStream.Current;
                }
                catch (Exception e) when (!cancellationToken.IsCancellationRequested && watchdog.IsCancellationRequested && e is OperationCanceledException or RpcException)
                {
                    failure = new UnavailableException($"no page or heartbeat for {silence!.Value.TotalSeconds:0.###}s; reading again", null, e);
                    break;
                }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested && !watchdog.IsCancellationRequested && FailedStatus(call) is { } status)
                {
                    // Nobody cancelled: Grpc.Net.Client (with ThrowOperationCanceledOnCancellation)
                    // reports a stream that could not start, the hub being unreachable or its
                    // connection lost, as cancelled. The call's status says what happened.
                    var e = new RpcException(status);
                    if (LostConnection(e))
                    {
                        failure = new UnavailableException(status.Detail, null, e);
                        break;
                    }
                    if (status.StatusCode != StatusCode.Unavailable)
                    {
                        throw EventHubException.From(e);
                    }
                    failure = EventHubException.From(e);
                    break;
                }
                catch (RpcException e) when (e.StatusCode == StatusCode.Unavailable)
                {
                    failure = (EventHubException)EventHubException.From(e);
                    break;
                }
                catch (RpcException e) when (LostConnection(e))
                {
                    // The connection under the stream was lost: the hub closed it (it restarted
                    // while the reader was behind, say), or the handler's keepalive dropped it
                    // because the hub stopped answering. The hub is not there, not broken.
                    failure = new UnavailableException(e.Status.Detail, e.Trailers, e);
                    break;
                }
                catch (RpcException e)
                {
                    throw EventHubException.From(e);
                }
                // The caller's time between pages is not the hub's silence.
                watchdog.CancelAfter(Timeout.InfiniteTimeSpan);
                if (lost)
                {
                    lost = false;
                    if (observer is null)
                    {
                        Log.StreamBack(_logger, what);
                    }
                    else
                    {
                        observer.Recovered();
                    }
                }
                failures = 0;
                next = resume(next, response);
                yield return response;
                if (next is null)
                {
                    break;
                }
            }
            if (failure is null)
            {
                continue;
            }
            if (!retry.AllowsRetry(failures))
            {
                throw failure;
            }
            var delay = retry.Backoff(failures);
            failures++;
            if (observer is not null)
            {
                observer.Failed(failure, failures, delay);
            }
            else if (!lost)
            {
                Log.StreamLost(_logger, what, failure.Message);
            }
            lost = true;
            await Task.Delay(delay, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>True when a call failed because its connection was lost, which Grpc.Net.Client
    /// reports as INTERNAL with the transport's exception (an INTERNAL status from the hub has none):
    /// an <see cref="IOException"/> for a response under way, an <see cref="HttpRequestException"/>
    /// for a call still waiting for its response headers (as a stream reopened on a connection
    /// that has gone silent is when the keepalive drops it: a protocol error, so INTERNAL).</summary>
    private static bool LostConnection(RpcException e) =>
        e.StatusCode == StatusCode.Internal && e.Status.DebugException is IOException or HttpRequestException;

    /// <summary>The status a stream's call failed with, or <see langword="null"/> when it has none
    /// (yet) or succeeded.</summary>
    private static Status? FailedStatus<TResponse>(AsyncServerStreamingCall<TResponse> call)
    {
        try
        {
            var status = call.GetStatus();
            return status.StatusCode is StatusCode.OK or StatusCode.Cancelled ? null : status;
        }
        catch (InvalidOperationException)
        {
            return null;
        }
    }

    private static Proto.ReadPartitionRequest PartitionRequest(string topic, int partition, string cursor, int maxEvents, IReadOnlyCollection<string>? types)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(partition);
        ArgumentOutOfRangeException.ThrowIfNegative(maxEvents);
        var request = new Proto.ReadPartitionRequest
        {
            Topic = topic ?? "",
            Partition = (uint)partition,
            Cursor = cursor ?? "",
            MaxEvents = (uint)maxEvents,
        };
        if (types is not null)
        {
            request.Types_.AddRange(types);
        }
        return request;
    }

    private static uint Milliseconds(TimeSpan value, string name)
    {
        if (value < TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(name, value, $"{name} must not be negative");
        }
        return (uint)Math.Min(uint.MaxValue, Math.Round(value.TotalMilliseconds));
    }

    private static Proto.ReadPartitionRequest ResumeReadPartition(Proto.ReadPartitionRequest request, Proto.ReadPartitionResponse page)
    {
        var next = request.Clone();
        next.Cursor = page.Cursor;
        return next;
    }

    private static Proto.SurfaceRequest? ResumeSurface(Proto.SurfaceRequest request, Proto.SurfaceResponse page)
    {
        var next = request.Clone();
        next.AsOfTransaction = page.AsOfTransaction;
        if (page.Events.Count > 0)
        {
            next.AfterKey = page.Events[^1].Key;
            if (request.Limit > 0)
            {
                if (request.Limit <= page.Events.Count)
                {
                    return null;
                }
                next.Limit = request.Limit - (uint)page.Events.Count;
            }
        }
        return next;
    }

    private static Proto.ReadKeyRequest ResumeReadKey(Proto.ReadKeyRequest request, Proto.ReadKeyResponse page)
    {
        var next = request.Clone();
        if (page.Events.Count > 0)
        {
            next.FromVersion = page.Events[^1].KeyVersion + 1;
        }
        return next;
    }
}

/// <summary>Told of a stream's failures and recovery instead of the client's log (the
/// <see cref="Consumer"/> logs once for all its partitions).</summary>
internal interface IStreamObserver
{
    void Failed(EventHubException error, int failures, TimeSpan delay);

    void Recovered();
}
