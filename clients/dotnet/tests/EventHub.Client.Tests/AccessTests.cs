using Grpc.Core;
using static EventHub.Client.Tests.ClientTestKit;

namespace EventHub.Client.Tests;

/// <summary>A hub started with <c>--tokens FILE</c>: the client's <see cref="EventHubClientSettings.Token"/>
/// travels with every call, and the hub's refusals arrive as their exceptions.</summary>
public sealed class AccessTests
{
    private const string Root = "net-root-0123456789abcdef";
    private const string Writer = "net-writer-0123456789abcdef";
    private const string Reader = "net-reader-0123456789abcdef";
    private const string Appender = "net-appender-0123456789abcdef";

    private static async Task Drain<T>(IAsyncEnumerable<T> stream)
    {
        await foreach (var _ in stream)
        {
        }
    }

    [Fact]
    public async Task Bearer_tokens_are_sent_and_their_grants_enforced()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        var dir = Hub.NewDirectory();
        var tokens = Path.Combine(dir, "tokens");
        await File.WriteAllTextAsync(tokens, $"""
            # token  grants
            {Root} admin:*
            {Writer} admin:net-*
            {Reader} read:net-*
            {Appender} append:net-*
            """, ct);
        await using var hub = await Hub.StartAsync(dir, extra: ["--tokens", tokens]);
        EventHubClient Connect(string? token) => new(new EventHubClientSettings { Address = hub.Address, Token = token });
        await using var root = Connect(Root);
        await using var writer = Connect(Writer);
        await using var reader = Connect(Reader);
        await using var appender = Connect(Appender);
        await using var anonymous = Connect(null);
        await using var stranger = Connect("net-unknown-0123456789abcdef");

        // An admin token may create, append and invalidate in its topics.
        Assert.True((await writer.CreateTopicAsync("net-orders", 2, ct)).Created);
        var appended = await writer.AppendAsync("net-orders", Ev("k", "T", "x"), cancellationToken: ct);
        await root.CreateTopicAsync("zz-other", 1, ct);

        // A read token reads, and lists only the topics it may read.
        Assert.Equal(1UL, (await reader.GetTopicAsync("net-orders", ct)).EventCount);
        var (events, _, _) = await ReadAllAsync(reader, "net-orders", Partition.For("k", 2), Cursors.First, ct);
        Assert.Equal("x", Assert.Single(events).Text());
        Assert.Equal("k@1", KeysOf((await SurfaceAllAsync(reader, "net-orders", ct)).Events));
        var listed = new List<string>();
        await foreach (var topic in reader.ListTopicsAsync(cancellationToken: ct))
        {
            listed.Add(topic.Name);
        }
        Assert.Equal(["net-orders"], listed);

        // ... but may not append, create or invalidate: the message names the grant it needs.
        var denied = await Assert.ThrowsAsync<PermissionDeniedException>(() => reader.AppendAsync("net-orders", Ev("k", "T", "y"), cancellationToken: ct));
        Assert.Equal(StatusCode.PermissionDenied, denied.StatusCode);
        AssertHubMessage(denied, "append:net-orders");
        AssertHubMessage(await Assert.ThrowsAsync<PermissionDeniedException>(() => reader.CreateTopicAsync("net-new", 1, ct)), "admin:net-new");
        AssertHubMessage(await Assert.ThrowsAsync<PermissionDeniedException>(() => reader.InvalidateAsync("net-orders", appended.TransactionId, "no", ct)), "admin:net-orders");
        // Outside its grants it learns nothing, not even whether a topic exists.
        AssertHubMessage(await Assert.ThrowsAsync<PermissionDeniedException>(() => reader.GetTopicAsync("zz-other", ct)), "read:zz-other");
        AssertHubMessage(await Assert.ThrowsAsync<PermissionDeniedException>(() => reader.GetTopicAsync("zz-missing", ct)), "read:zz-missing");
        AssertHubMessage(await Assert.ThrowsAsync<PermissionDeniedException>(() => Drain(reader.ReadPartitionAsync("zz-other", 0, cancellationToken: ct))), "read:zz-other");

        // An append token appends (creating a topic) but does not read.
        await appender.AppendAsync("net-orders", Ev("k", "T", "z"), cancellationToken: ct);
        await appender.AppendAsync("net-auto", Ev("k"), cancellationToken: ct);
        AssertHubMessage(await Assert.ThrowsAsync<PermissionDeniedException>(() => appender.GetTopicAsync("net-orders", ct)), "read:net-orders");
        AssertHubMessage(await Assert.ThrowsAsync<PermissionDeniedException>(() => Drain(appender.FollowAsync("net-orders", 0, cancellationToken: ct))), "read:net-orders");

        // Without a token, or with one the hub does not know: UNAUTHENTICATED, for every kind of call.
        var unauthenticated = await Assert.ThrowsAsync<UnauthenticatedException>(() => anonymous.GetTopicAsync("net-orders", ct));
        Assert.Equal(StatusCode.Unauthenticated, unauthenticated.StatusCode);
        AssertHubMessage(unauthenticated, "authorization: Bearer <token>");
        AssertHubMessage(await Assert.ThrowsAsync<UnauthenticatedException>(() => anonymous.AppendAsync("net-orders", Ev("k"), cancellationToken: ct)), "authorization");
        AssertHubMessage(await Assert.ThrowsAsync<UnauthenticatedException>(() => Drain(anonymous.ReadPartitionAsync("net-orders", 0, cancellationToken: ct))), "authorization");
        AssertHubMessage(await Assert.ThrowsAsync<UnauthenticatedException>(() => Drain(anonymous.ListTopicsAsync(cancellationToken: ct))), "authorization");
        AssertHubMessage(await Assert.ThrowsAsync<UnauthenticatedException>(() => stranger.GetTopicAsync("net-orders", ct)), "not one this hub knows");

        // The refused calls changed nothing.
        var orders = await root.GetTopicAsync("net-orders", ct);
        Assert.Equal(2UL, orders.EventCount);
        await Assert.ThrowsAsync<NotFoundException>(() => root.GetTopicAsync("net-new", ct));
        var (all, _, _) = await ReadAllAsync(root, "net-orders", Partition.For("k", 2), Cursors.First, ct);
        Assert.Equal(["x", "z"], all.Select(e => e.Text()));
        Assert.All(all, e => Assert.False(e.TransactionInvalidated));
        Assert.Equal(0, await hub.StopAsync());
    }
}
