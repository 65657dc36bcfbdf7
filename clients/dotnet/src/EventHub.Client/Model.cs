namespace EventHub.Client;

/// <summary>What an event expects of its key's version just before it is stored. The key's
/// version counts that key's events in the topic (1, 2, 3 …), invalidated ones included. A
/// mismatch fails the whole Append with a <see cref="KeyVersionConflictException"/>.</summary>
public readonly record struct ExpectedVersion
{
    private ExpectedVersion(ExpectedVersionKind kind, ulong version)
    {
        Kind = kind;
        Version = version;
    }

    /// <summary>No expectation (the default).</summary>
    public static ExpectedVersion Any => default;

    /// <summary>The key has no event yet (its version is 0).</summary>
    public static ExpectedVersion NoKey => new(ExpectedVersionKind.NoKey, 0);

    /// <summary>The key has at least one event.</summary>
    public static ExpectedVersion Exists => new(ExpectedVersionKind.Exists, 0);

    /// <summary>The key's version is exactly <paramref name="version"/> (0: the key has no event yet).</summary>
    public static ExpectedVersion Exact(ulong version) => new(ExpectedVersionKind.Exact, version);

    /// <summary>Which expectation this is.</summary>
    public ExpectedVersionKind Kind { get; }

    /// <summary>The version expected with <see cref="ExpectedVersionKind.Exact"/>; 0 otherwise.</summary>
    public ulong Version { get; }

    /// <inheritdoc />
    public override string ToString() => Kind == ExpectedVersionKind.Exact ? $"Exact({Version})" : Kind.ToString();
}

/// <summary>The kinds of <see cref="ExpectedVersion"/>.</summary>
public enum ExpectedVersionKind
{
    /// <summary>No expectation.</summary>
    Any,
    /// <summary>The key has no event yet.</summary>
    NoKey,
    /// <summary>The key has at least one event.</summary>
    Exists,
    /// <summary>The key's version is exactly <see cref="ExpectedVersion.Version"/>.</summary>
    Exact,
}

/// <summary>An event to append.</summary>
/// <param name="Key">The entity the event is about (order id, person id): 1–1024 bytes of UTF-8,
/// not starting with <c>$</c>. It decides the partition (<see cref="Partition.For"/>).</param>
/// <param name="Type">The event's type, the discriminator consumers switch on
/// (<c>OrderShipped</c>): 1–200 characters of <c>[A-Za-z0-9._:/-]</c>, not starting with <c>$</c>.</param>
/// <param name="Payload">Opaque bytes.</param>
public sealed record EventData(string Key, string Type, ReadOnlyMemory<byte> Payload = default)
{
    /// <summary>The payload's media type, e.g. <c>application/json</c>; optional.</summary>
    public string ContentType { get; init; } = "";

    /// <summary>String pairs carried with the event (trace ids and the like).</summary>
    public IReadOnlyDictionary<string, string>? Headers { get; init; }

    /// <summary>A client-chosen id, unique within the topic: appending an id that is already stored
    /// stores nothing and points at the stored event, which makes a retried Append safe (and is what
    /// lets the client retry an Append on its own). Empty means none.</summary>
    public string EventId { get; init; } = "";

    /// <summary>What the event expects of its key's version.</summary>
    public ExpectedVersion Expected { get; init; }

    /// <summary>Marks the key deleted: Surface leaves it out until a later valid event revives it.</summary>
    public bool Tombstone { get; init; }
}

/// <summary>What happened to one event of an Append.</summary>
public enum AppendOutcome
{
    /// <summary>The event was stored by this call.</summary>
    Stored = 1,
    /// <summary>An event with the same event id was already stored; the result points at it.</summary>
    DuplicateEventId = 2,
    /// <summary>Dedup by content: the key's latest valid event has the same content; the result points at it.</summary>
    DuplicateContent = 3,
}

/// <summary>The position of one appended event (or of the stored event it duplicates).</summary>
/// <param name="Partition">The event's partition.</param>
/// <param name="Sequence">The event's sequence in its partition.</param>
/// <param name="Cursor">The cursor right after the event.</param>
/// <param name="KeyVersion">The event's key version.</param>
/// <param name="TransactionId">The transaction that stored the event.</param>
/// <param name="Outcome">What happened to the event.</param>
public sealed record AppendedEvent(int Partition, ulong Sequence, string Cursor, ulong KeyVersion, ulong TransactionId, AppendOutcome Outcome)
{
    /// <summary>True when this call did not store the event (it duplicates a stored one).</summary>
    public bool Deduplicated => Outcome != AppendOutcome.Stored;
}

/// <summary>A committed Append: durable once you have it.</summary>
/// <param name="TransactionId">The transaction the call committed (if every event was a duplicate,
/// the transaction of the first event's stored copy).</param>
/// <param name="Results">One result per event, in request order.</param>
public sealed record AppendResult(ulong TransactionId, IReadOnlyList<AppendedEvent> Results);

/// <summary>The content of an invalidation marker: which transaction was invalidated, and why.</summary>
public sealed record InvalidationMarker(ulong TransactionId, string Reason);

/// <summary>A stored event as readers see it.</summary>
public sealed record EventRecord
{
    /// <summary>The type of the marker events Invalidate appends.</summary>
    public const string InvalidationType = "$invalidation";

    /// <summary>The partition holding the event.</summary>
    public required int Partition { get; init; }
    /// <summary>The event's sequence in its partition: 1, 2, 3 … with no gaps.</summary>
    public required ulong Sequence { get; init; }
    /// <summary>The cursor right after this event.</summary>
    public required string Cursor { get; init; }
    /// <summary>The transaction that stored the event (topic-wide, increasing).</summary>
    public required ulong TransactionId { get; init; }
    /// <summary>The key; empty for invalidation markers.</summary>
    public required string Key { get; init; }
    /// <summary>The key's version with this event (1 for its first event); 0 for invalidation markers.</summary>
    public required ulong KeyVersion { get; init; }
    /// <summary>The client-chosen event id, or empty.</summary>
    public required string EventId { get; init; }
    /// <summary>The event type; <see cref="InvalidationType"/> for invalidation markers.</summary>
    public required string Type { get; init; }
    /// <summary>The payload's media type.</summary>
    public required string ContentType { get; init; }
    /// <summary>The headers.</summary>
    public required IReadOnlyDictionary<string, string> Headers { get; init; }
    /// <summary>The payload.</summary>
    public required ReadOnlyMemory<byte> Payload { get; init; }
    /// <summary>True when the event marks its key deleted.</summary>
    public required bool Tombstone { get; init; }
    /// <summary>When the transaction committed (the hub's clock).</summary>
    public required DateTimeOffset CommittedAt { get; init; }
    /// <summary>True when the event's transaction has been invalidated (as of the read).</summary>
    public required bool TransactionInvalidated { get; init; }
    /// <summary>Set on invalidation markers: which transaction was invalidated, and why.</summary>
    public InvalidationMarker? Invalidation { get; init; }

    /// <summary>True for the marker events Invalidate appends (type <see cref="InvalidationType"/>).</summary>
    public bool IsInvalidationMarker => Invalidation is not null;
}

/// <summary>One page of a partition.</summary>
/// <param name="Partition">The partition read.</param>
/// <param name="Events">The events of the page, in sequence order. Empty for a long-poll that timed
/// out, for heartbeats, and for a filtered read's progress over events of other types.</param>
/// <param name="Cursor">The cursor after this page: store it (with your effects) to continue from here.</param>
/// <param name="CaughtUp">True when no committed event is past <paramref name="Cursor"/> (as of this page).</param>
public sealed record PartitionPage(int Partition, IReadOnlyList<EventRecord> Events, string Cursor, bool CaughtUp)
{
    /// <summary>True when the page carries no events (a heartbeat, a timed-out long-poll, or a
    /// filtered read's progress); its <see cref="Cursor"/> is still worth storing.</summary>
    public bool IsEmpty => Events.Count == 0;
}

/// <summary>One page of a surface.</summary>
/// <param name="Events">The latest valid event of each key in the page, sorted by key (bytewise
/// order of the UTF-8 key).</param>
/// <param name="Cursors">Per partition, the cursor at which the snapshot was taken: reading each
/// partition from here continues the surface with no gap and no overlap. The same on every page.</param>
/// <param name="AsOfTransaction">The transaction the snapshot is as of (0 for an empty topic).</param>
/// <param name="NextAfterKey">Set on the last page when the limit stopped the listing before its
/// end: pass it as <see cref="SurfaceOptions.AfterKey"/> (with <paramref name="AsOfTransaction"/>) to go on.</param>
public sealed record SurfacePage(
    IReadOnlyList<EventRecord> Events,
    IReadOnlyDictionary<int, string> Cursors,
    ulong AsOfTransaction,
    string NextAfterKey);

/// <summary>One page of a key's history.</summary>
/// <param name="Events">Events of the key in key-version order, invalidated ones included (and marked).</param>
/// <param name="CurrentVersion">The key's version when the read began (0 for a key never written).</param>
public sealed record KeyPage(IReadOnlyList<EventRecord> Events, ulong CurrentVersion);

/// <summary>The invalidation markers of a transaction.</summary>
/// <param name="MarkerTransactionId">The transaction that appended the markers.</param>
/// <param name="Markers">One marker per partition holding events of the invalidated transaction.</param>
/// <param name="AlreadyInvalidated">True when the transaction had been invalidated before; the
/// markers are those of the first invalidation.</param>
public sealed record InvalidateResult(ulong MarkerTransactionId, IReadOnlyList<AppendedEvent> Markers, bool AlreadyInvalidated);

/// <summary>One partition of a topic.</summary>
/// <param name="Partition">The partition.</param>
/// <param name="HeadCursor">The cursor after the partition's last event (equivalent to
/// <see cref="Cursors.First"/> for an empty partition).</param>
/// <param name="EventCount">The number of events in the partition (also its last sequence).</param>
public sealed record PartitionInfo(int Partition, string HeadCursor, ulong EventCount);

/// <summary>A topic.</summary>
/// <param name="Name">The topic name.</param>
/// <param name="PartitionCount">The number of partitions.</param>
/// <param name="CreatedAt">When the topic was created.</param>
/// <param name="LastTransactionId">The topic's last transaction id (0 before the first Append).</param>
/// <param name="EventCount">The number of events in all partitions.</param>
/// <param name="Partitions">Every partition, in order.</param>
public sealed record TopicInfo(
    string Name,
    int PartitionCount,
    DateTimeOffset CreatedAt,
    ulong LastTransactionId,
    ulong EventCount,
    IReadOnlyList<PartitionInfo> Partitions);

/// <summary>The answer to CreateTopic.</summary>
/// <param name="Topic">The topic.</param>
/// <param name="Created">False when the topic already existed with this partition count.</param>
public sealed record CreateTopicResult(TopicInfo Topic, bool Created);

/// <summary>Options of <see cref="EventHubClient.ReadPartitionAsync"/>.</summary>
public sealed record ReadOptions
{
    /// <summary>Most events per page; 0 means the hub's default of 100.</summary>
    public int MaxEvents { get; init; }

    /// <summary>How long to wait for an event when nothing is past the cursor (long-poll); zero
    /// answers at once. If none commits in time, the read yields one empty page.</summary>
    public TimeSpan Wait { get; init; }

    /// <summary>When not empty, only events of these types are sent; skipped events still advance
    /// the cursors. Invalidation markers come only when <see cref="EventRecord.InvalidationType"/> is listed.</summary>
    public IReadOnlyCollection<string>? Types { get; init; }

    /// <summary>Replaces the client's retry policy for this read.</summary>
    public RetryPolicy? Retry { get; init; }
}

/// <summary>Options of <see cref="EventHubClient.FollowAsync"/>.</summary>
public sealed record FollowOptions
{
    /// <summary>Most events per page; 0 means the hub's default of 100.</summary>
    public int MaxEvents { get; init; }

    /// <summary>The longest time between two pages: an empty heartbeat page comes when nothing else
    /// does. Zero means the hub's default of 5 seconds. A stream silent for three heartbeats is
    /// taken for dead and read again.</summary>
    public TimeSpan Heartbeat { get; init; }

    /// <summary>When not empty, only events of these types are sent; skipped events still advance
    /// the cursors. Invalidation markers come only when <see cref="EventRecord.InvalidationType"/> is listed.</summary>
    public IReadOnlyCollection<string>? Types { get; init; }

    /// <summary>Replaces the client's retry policy for this stream.</summary>
    public RetryPolicy? Retry { get; init; }
}

/// <summary>Options of <see cref="EventHubClient.SurfaceAsync"/>.</summary>
public sealed record SurfaceOptions
{
    /// <summary>Only keys starting with this prefix.</summary>
    public string KeyPrefix { get; init; } = "";

    /// <summary>Only keys sorted after this key (to go on from a page's
    /// <see cref="SurfacePage.NextAfterKey"/>).</summary>
    public string AfterKey { get; init; } = "";

    /// <summary>Most keys returned; 0 means all.</summary>
    public int Limit { get; init; }

    /// <summary>When not 0, the surface as it stood right after this transaction.</summary>
    public ulong AsOfTransaction { get; init; }
}
