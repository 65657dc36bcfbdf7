using Microsoft.Extensions.Logging;

namespace EventHub.Client;

/// <summary>The client's log lines, as source-generated <see cref="LoggerMessage"/> methods.</summary>
internal static partial class Log
{
    [LoggerMessage(1, LogLevel.Warning, "eventhub: {What}: {Error}; retrying until it is back")]
    internal static partial void StreamLost(ILogger logger, string what, string error);

    [LoggerMessage(2, LogLevel.Information, "eventhub: {What}: reading again")]
    internal static partial void StreamBack(ILogger logger, string what);

    [LoggerMessage(3, LogLevel.Warning, "eventhub: consumer '{Group}' of topic '{Topic}' lost the hub ({Error}); retrying until it is back")]
    internal static partial void ConsumerLost(ILogger logger, string group, string topic, string error);

    [LoggerMessage(4, LogLevel.Information, "eventhub: consumer '{Group}' of topic '{Topic}' is reading again")]
    internal static partial void ConsumerBack(ILogger logger, string group, string topic);

    [LoggerMessage(5, LogLevel.Debug, "eventhub: consumer '{Group}' of topic '{Topic}', {Where}: {Error}; failure {Failures}, trying again in {Delay}")]
    internal static partial void ConsumerRetry(ILogger logger, string group, string topic, string where, string error, int failures, TimeSpan delay);
}
