using EventHub.Client;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers an <see cref="EventHubClient"/> with <c>Microsoft.Extensions.DependencyInjection</c>.</summary>
public static class EventHubServiceCollectionExtensions
{
    /// <summary>Registers one shared <see cref="EventHubClient"/> of the hub at
    /// <paramref name="address"/>, logging through the container's <see cref="ILoggerFactory"/>.</summary>
    public static IServiceCollection AddEventHubClient(this IServiceCollection services, string address) =>
        services.AddEventHubClient(new EventHubClientSettings { Address = address });

    /// <summary>Registers one shared <see cref="EventHubClient"/> with <paramref name="settings"/>;
    /// when they name no logger factory, the container's is used.</summary>
    public static IServiceCollection AddEventHubClient(this IServiceCollection services, EventHubClientSettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        return services.AddEventHubClient(_ => settings);
    }

    /// <summary>Registers one shared <see cref="EventHubClient"/> whose settings come from
    /// <paramref name="settings"/> (called once, with the container, when the client is first
    /// needed); when they name no logger factory, the container's is used. The container disposes
    /// the client.</summary>
    public static IServiceCollection AddEventHubClient(this IServiceCollection services, Func<IServiceProvider, EventHubClientSettings> settings)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(settings);
        services.TryAddSingleton(provider =>
        {
            var chosen = settings(provider);
            if (chosen.LoggerFactory is null && provider.GetService(typeof(ILoggerFactory)) is ILoggerFactory loggers)
            {
                chosen = chosen with { LoggerFactory = loggers };
            }
            return new EventHubClient(chosen);
        });
        return services;
    }
}
