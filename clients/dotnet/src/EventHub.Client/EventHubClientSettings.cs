using Microsoft.Extensions.Logging;

namespace EventHub.Client;

/// <summary>Settings of an <see cref="EventHubClient"/>: an immutable record, so one instance can
/// be shared and varied with <c>with</c>.</summary>
public sealed record EventHubClientSettings
{
    /// <summary>The hub's address: <c>http://host:port</c> (plaintext HTTP/2), <c>https://…</c>
    /// through a TLS-terminating proxy, or a bare <c>host:port</c> (taken as <c>http://</c>).
    /// Defaults to the hub's own default, <c>http://127.0.0.1:50051</c>.</summary>
    public string Address { get; init; } = "http://127.0.0.1:50051";

    /// <summary>The bearer token sent with every call (<c>authorization: Bearer …</c>), for a hub
    /// started with <c>--tokens</c>; <see langword="null"/> sends none.</summary>
    public string? Token { get; init; }

    /// <summary>The deadline of each unary call (Append, GetTopic …) and of each page of a
    /// ListTopics; <see langword="null"/> sets none. Streams have none: they end when you stop
    /// reading them or cancel their token. 30 seconds by default.</summary>
    public TimeSpan? DefaultDeadline { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>How calls that fail with UNAVAILABLE are retried.</summary>
    public RetryPolicy Retry { get; init; } = RetryPolicy.Default;

    /// <summary>Makes the HTTP handler of the client's channel (a proxy, custom TLS, a test
    /// handler); <see langword="null"/> uses a <see cref="SocketsHttpHandler"/> that pings a silent
    /// connection after 20 seconds and drops it when no answer comes within 10, so that a dead
    /// connection is noticed and replaced.</summary>
    public Func<HttpMessageHandler>? HttpMessageHandlerFactory { get; init; }

    /// <summary>Where the client logs (one warning when a stream loses the hub, one information
    /// line when it is back); <see langword="null"/> logs nothing.</summary>
    public ILoggerFactory? LoggerFactory { get; init; }

    internal Uri AddressUri()
    {
        var address = Address.Contains("://", StringComparison.Ordinal) ? Address : "http://" + Address;
        if (!Uri.TryCreate(address, UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
        {
            throw new ArgumentException($"the address must be http://host:port, https://host:port or host:port; got '{Address}'", nameof(Address));
        }
        return uri;
    }
}
