using System.Collections.ObjectModel;
using Google.Protobuf;
using Proto = EventHub.V1;

namespace EventHub.Client;

/// <summary>Conversions between the generated protobuf messages and the public records.</summary>
internal static class Mapping
{
    private static readonly IReadOnlyDictionary<string, string> NoHeaders = ReadOnlyDictionary<string, string>.Empty;

    internal static Proto.AppendEvent ToProto(EventData e)
    {
        ArgumentNullException.ThrowIfNull(e);
        var pb = new Proto.AppendEvent
        {
            Key = e.Key ?? "",
            Type = e.Type ?? "",
            ContentType = e.ContentType ?? "",
            Payload = e.Payload.IsEmpty ? ByteString.Empty : ByteString.CopyFrom(e.Payload.Span),
            EventId = e.EventId ?? "",
            Tombstone = e.Tombstone,
            Expected = e.Expected.Kind switch
            {
                ExpectedVersionKind.NoKey => Proto.ExpectedVersion.NoKey,
                ExpectedVersionKind.Exists => Proto.ExpectedVersion.Exists,
                ExpectedVersionKind.Exact => Proto.ExpectedVersion.Exact,
                _ => Proto.ExpectedVersion.Any,
            },
            ExpectedKeyVersion = e.Expected.Version,
        };
        if (e.Headers is not null)
        {
            foreach (var (name, value) in e.Headers)
            {
                pb.Headers[name] = value;
            }
        }
        return pb;
    }

    internal static AppendedEvent FromProto(Proto.AppendResult r) =>
        new((int)r.Partition, r.Sequence, r.Cursor, r.KeyVersion, r.TransactionId, (AppendOutcome)r.Outcome);

    internal static AppendResult FromProto(Proto.AppendResponse r) =>
        new(r.TransactionId, r.Results.Select(FromProto).ToArray());

    internal static EventRecord FromProto(Proto.Event e) => new()
    {
        Partition = (int)e.Partition,
        Sequence = e.Sequence,
        Cursor = e.Cursor,
        TransactionId = e.TransactionId,
        Key = e.Key,
        KeyVersion = e.KeyVersion,
        EventId = e.EventId,
        Type = e.Type,
        ContentType = e.ContentType,
        Headers = e.Headers.Count == 0 ? NoHeaders : new ReadOnlyDictionary<string, string>(new Dictionary<string, string>(e.Headers)),
        Payload = e.Payload.Memory,
        Tombstone = e.Tombstone,
        CommittedAt = e.CommittedAt?.ToDateTimeOffset() ?? default,
        TransactionInvalidated = e.TransactionInvalidated,
        Invalidation = e.Invalidation is null ? null : new InvalidationMarker(e.Invalidation.TransactionId, e.Invalidation.Reason),
    };

    internal static IReadOnlyList<EventRecord> Events(Google.Protobuf.Collections.RepeatedField<Proto.Event> events) =>
        events.Count == 0 ? [] : events.Select(FromProto).ToArray();

    internal static PartitionPage FromProto(Proto.ReadPartitionResponse r) =>
        new((int)r.Partition, Events(r.Events), r.Cursor, r.CaughtUp);

    internal static SurfacePage FromProto(Proto.SurfaceResponse r) =>
        new(Events(r.Events), r.Cursors.ToDictionary(c => (int)c.Partition, c => c.Cursor), r.AsOfTransaction, r.NextAfterKey);

    internal static KeyPage FromProto(Proto.ReadKeyResponse r) => new(Events(r.Events), r.CurrentVersion);

    internal static InvalidateResult FromProto(Proto.InvalidateResponse r) =>
        new(r.MarkerTransactionId, r.Markers.Select(FromProto).ToArray(), r.AlreadyInvalidated);

    internal static TopicInfo FromProto(Proto.Topic t) => new(
        t.Name,
        (int)t.PartitionCount,
        t.CreatedAt?.ToDateTimeOffset() ?? default,
        t.LastTransactionId,
        t.EventCount,
        t.Partitions.Select(p => new PartitionInfo((int)p.Partition, p.HeadCursor, p.EventCount)).ToArray());
}
