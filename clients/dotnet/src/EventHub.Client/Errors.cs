using System.Globalization;
using System.Text;
using Grpc.Core;

namespace EventHub.Client;

/// <summary>A call to the hub failed. <see cref="StatusCode"/> is the gRPC status, the message is
/// the hub's own (it says what to change), and <see cref="Trailers"/> the trailing metadata.</summary>
/// <remarks>Each status the proto documents has a subclass; catch this type for all of them.</remarks>
public class EventHubException : Exception
{
    /// <summary>Creates an exception for a failed call.</summary>
    public EventHubException(StatusCode statusCode, string message, Metadata? trailers = null, Exception? innerException = null)
        : base(message, innerException)
    {
        StatusCode = statusCode;
        Trailers = trailers ?? [];
    }

    /// <summary>The gRPC status code of the failure.</summary>
    public StatusCode StatusCode { get; }

    /// <summary>The failed call's trailing metadata (empty when there was none).</summary>
    public Metadata Trailers { get; }

    /// <inheritdoc />
    public override string ToString() => $"{GetType().FullName} ({StatusCode}): {Message}";

    internal static EventHubException From(RpcException e)
    {
        var message = string.IsNullOrEmpty(e.Status.Detail) ? e.StatusCode.ToString() : e.Status.Detail;
        var trailers = e.Trailers;
        return e.StatusCode switch
        {
            StatusCode.InvalidArgument => new InvalidArgumentException(message, trailers, e),
            StatusCode.NotFound => new NotFoundException(message, trailers, e),
            StatusCode.AlreadyExists => new AlreadyExistsException(message, trailers, e),
            StatusCode.PermissionDenied => new PermissionDeniedException(message, trailers, e),
            StatusCode.Unauthenticated => new UnauthenticatedException(message, trailers, e),
            StatusCode.ResourceExhausted => new ResourceExhaustedException(message, trailers, e),
            StatusCode.FailedPrecondition => new KeyVersionConflictException(message, trailers, e),
            StatusCode.OutOfRange => new OutOfRangeException(message, trailers, e),
            StatusCode.Unavailable => new UnavailableException(message, trailers, e),
            StatusCode.DeadlineExceeded => new DeadlineExceededException(message, trailers, e),
            StatusCode.Unimplemented => new UnimplementedException(message, trailers, e),
            StatusCode.Internal => new InternalException(message, trailers, e),
            _ => new EventHubException(e.StatusCode, message, trailers, e),
        };
    }
}

/// <summary>INVALID_ARGUMENT: a bad name, key, type, header, cursor or partition, an empty or
/// oversized event, a reserved name; nothing was changed.</summary>
public sealed class InvalidArgumentException(string message, Metadata? trailers = null, Exception? inner = null)
    : EventHubException(StatusCode.InvalidArgument, message, trailers, inner);

/// <summary>NOT_FOUND: an unknown topic (or transaction, for Invalidate).</summary>
public sealed class NotFoundException(string message, Metadata? trailers = null, Exception? inner = null)
    : EventHubException(StatusCode.NotFound, message, trailers, inner);

/// <summary>ALREADY_EXISTS: CreateTopic of a topic that exists with another partition count.</summary>
public sealed class AlreadyExistsException(string message, Metadata? trailers = null, Exception? inner = null)
    : EventHubException(StatusCode.AlreadyExists, message, trailers, inner);

/// <summary>PERMISSION_DENIED: the token's grants do not cover this call on this topic; the message
/// names the grant it needs.</summary>
public sealed class PermissionDeniedException(string message, Metadata? trailers = null, Exception? inner = null)
    : EventHubException(StatusCode.PermissionDenied, message, trailers, inner);

/// <summary>UNAUTHENTICATED: the hub requires a bearer token and the call carried none it knows
/// (set <see cref="EventHubClientSettings.Token"/>).</summary>
public sealed class UnauthenticatedException(string message, Metadata? trailers = null, Exception? inner = null)
    : EventHubException(StatusCode.Unauthenticated, message, trailers, inner);

/// <summary>RESOURCE_EXHAUSTED: a request over one of the hub's limits (too many events, say); the
/// message names the limit.</summary>
public sealed class ResourceExhaustedException(string message, Metadata? trailers = null, Exception? inner = null)
    : EventHubException(StatusCode.ResourceExhausted, message, trailers, inner);

/// <summary>OUT_OF_RANGE: a request over the hub's total size limit, or a cursor past its
/// partition's last stored event (a database restored from an older copy holds such cursors).</summary>
public sealed class OutOfRangeException(string message, Metadata? trailers = null, Exception? inner = null)
    : EventHubException(StatusCode.OutOfRange, message, trailers, inner);

/// <summary>UNAVAILABLE: the hub or its database could not be reached, after the retries the
/// <see cref="RetryPolicy"/> allowed. For an Append the message says whether the events may have
/// been stored; events with event ids make retrying it safe.</summary>
public sealed class UnavailableException(string message, Metadata? trailers = null, Exception? inner = null)
    : EventHubException(StatusCode.Unavailable, message, trailers, inner);

/// <summary>DEADLINE_EXCEEDED: the call did not finish within its deadline
/// (<see cref="EventHubClientSettings.DefaultDeadline"/>).</summary>
public sealed class DeadlineExceededException(string message, Metadata? trailers = null, Exception? inner = null)
    : EventHubException(StatusCode.DeadlineExceeded, message, trailers, inner);

/// <summary>UNIMPLEMENTED: the server does not serve this call (not an eventhub, or an older one).</summary>
public sealed class UnimplementedException(string message, Metadata? trailers = null, Exception? inner = null)
    : EventHubException(StatusCode.Unimplemented, message, trailers, inner);

/// <summary>INTERNAL: the hub failed in a way it did not expect; its log says more.</summary>
public sealed class InternalException(string message, Metadata? trailers = null, Exception? inner = null)
    : EventHubException(StatusCode.Internal, message, trailers, inner);

/// <summary>FAILED_PRECONDITION: an event's expected key version did not hold, so nothing of the
/// Append was stored. <see cref="Key"/> and <see cref="ActualVersion"/> say which key and where it
/// stands (from the trailers <c>eventhub-key</c>, percent-encoded UTF-8, and
/// <c>eventhub-actual-version</c>).</summary>
public sealed class KeyVersionConflictException : EventHubException
{
    /// <summary>Creates the exception, decoding the key and version from <paramref name="trailers"/>.</summary>
    public KeyVersionConflictException(string message, Metadata? trailers = null, Exception? inner = null)
        : base(StatusCode.FailedPrecondition, message, trailers, inner)
    {
        var key = Trailers.GetValue("eventhub-key");
        Key = key is null ? null : PercentDecode(key);
        var version = Trailers.GetValue("eventhub-actual-version");
        ActualVersion = ulong.TryParse(version, NumberStyles.None, CultureInfo.InvariantCulture, out var v) ? v : null;
    }

    /// <summary>The key whose version did not match, or <see langword="null"/> if the hub did not say.</summary>
    public string? Key { get; }

    /// <summary>The key's actual version, or <see langword="null"/> if the hub did not say.</summary>
    public ulong? ActualVersion { get; }

    private static string PercentDecode(string value)
    {
        var bytes = new List<byte>(value.Length);
        for (var i = 0; i < value.Length; i++)
        {
            if (value[i] == '%' && i + 2 < value.Length
                && byte.TryParse(value.AsSpan(i + 1, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var b))
            {
                bytes.Add(b);
                i += 2;
            }
            else
            {
                bytes.AddRange(Encoding.UTF8.GetBytes(value[i].ToString()));
            }
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }
}

/// <summary>The stored cursor moved under a <see cref="Consumer"/>: another instance of the same
/// group processed the partition. The page's transaction was rolled back, so nothing was applied
/// twice.</summary>
public sealed class CursorConflictException(string message) : Exception(message);
