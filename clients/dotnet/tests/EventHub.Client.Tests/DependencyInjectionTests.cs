using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using static EventHub.Client.Tests.ClientTestKit;

namespace EventHub.Client.Tests;

/// <summary><c>services.AddEventHubClient(...)</c>: one shared client, logging through the container.</summary>
[Collection("hub")]
public sealed class DependencyInjectionTests(HubFixture fixture)
{
    [Fact]
    public async Task AddEventHubClient_registers_one_singleton_that_works_and_logs_through_the_containers_factory()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        var log = new LogRecorder();
        var services = new ServiceCollection();
        services.AddLogging(b => b.AddProvider(log).SetMinimumLevel(LogLevel.Debug));
        services.AddEventHubClient(fixture.Hub.Address);
        EventHubClient client;
        await using (var provider = services.BuildServiceProvider(new ServiceProviderOptions { ValidateScopes = true, ValidateOnBuild = true }))
        {
            client = provider.GetRequiredService<EventHubClient>();
            Assert.Same(client, provider.GetRequiredService<EventHubClient>());
            using (var scope = provider.CreateScope())
            {
                Assert.Same(client, scope.ServiceProvider.GetRequiredService<EventHubClient>());
            }
            Assert.Equal(fixture.Hub.Address, client.Settings.Address);
            Assert.Same(provider.GetRequiredService<ILoggerFactory>(), client.Settings.LoggerFactory);

            // It talks to the hub ...
            var topic = Names.Topic("di");
            var appended = await client.AppendAsync(topic, Ev("k", payload: "x"), cancellationToken: ct);
            Assert.Equal(1UL, (await client.GetTopicAsync(topic, ct)).EventCount);
            var (events, _, _) = await ReadAllAsync(client, topic, appended.Results[0].Partition, Cursors.First, ct);
            Assert.Equal("x", Assert.Single(events).Text());
            // ... and its channel logged the calls through the container's logger factory.
            Assert.Equal(1, log.Attempts("Append"));
            Assert.Equal(1, log.Attempts("GetTopic"));
        }

        // The container owns the client: disposing it disposed the client.
        await Assert.ThrowsAsync<ObjectDisposedException>(() => client.GetTopicAsync("t", ct));
    }

    [Fact]
    public async Task AddEventHubClient_with_settings_keeps_their_logger_and_calls_the_factory_once()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        var mine = new LogRecorder();
        using var loggers = LoggerFactory.Create(b => b.AddProvider(mine).SetMinimumLevel(LogLevel.Debug));
        var calls = 0;
        var services = new ServiceCollection();
        services.AddLogging();
        services.AddEventHubClient(provider =>
        {
            calls++;
            Assert.NotNull(provider.GetService<ILoggerFactory>());
            return new EventHubClientSettings { Address = fixture.Hub.Address, LoggerFactory = loggers, Retry = RetryPolicy.None };
        });
        // A second registration does not replace the first.
        services.AddEventHubClient("http://127.0.0.1:1");
        Assert.Single(services, d => d.ServiceType == typeof(EventHubClient));
        await using var provider = services.BuildServiceProvider();
        Assert.Equal(0, calls);

        var client = provider.GetRequiredService<EventHubClient>();
        Assert.Same(client, provider.GetRequiredService<EventHubClient>());
        Assert.Equal(1, calls);
        Assert.Same(loggers, client.Settings.LoggerFactory);
        Assert.Equal(RetryPolicy.None, client.Settings.Retry);
        await client.AppendAsync(Names.Topic("di"), Ev("k"), cancellationToken: ct);
        Assert.Equal(1, mine.Attempts("Append"));

        // Without a logging registration there is no factory to use, and the client logs nothing.
        var bare = new ServiceCollection().AddEventHubClient(new EventHubClientSettings { Address = fixture.Hub.Address });
        await using var bareProvider = bare.BuildServiceProvider();
        var quiet = bareProvider.GetRequiredService<EventHubClient>();
        Assert.Null(quiet.Settings.LoggerFactory);
        Assert.True((await quiet.CreateTopicAsync(Names.Topic("di"), 1, ct)).Created);
    }
}
