namespace EventHub.Client.Tests;

[Collection("hub")]
public sealed class SmokeTests(HubFixture fixture)
{
    [Fact]
    public async Task Append_then_read_back()
    {
        await using var client = fixture.NewClient();
        var topic = Names.Topic();
        var appended = await client.AppendAsync(topic, new EventData("k", "T", "hi"u8.ToArray()));
        var partition = appended.Results[0].Partition;
        var events = new List<EventRecord>();
        await foreach (var page in client.ReadPartitionAsync(topic, partition))
        {
            events.AddRange(page.Events);
        }
        Assert.Equal("hi"u8.ToArray(), Assert.Single(events).Payload.ToArray());
    }
}
