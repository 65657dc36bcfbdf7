using System.Globalization;
using System.Text;
using static EventHub.Client.Tests.ClientTestKit;

namespace EventHub.Client.Tests;

/// <summary><see cref="Partition.For"/> is the FNV-1a hash the proto documents, and agrees with the hub.</summary>
[Collection("hub")]
public sealed class PartitionTests(HubFixture fixture)
{
    [Fact]
    public void Fnv1a64_gives_the_protos_examples()
    {
        Assert.Equal(0xcbf29ce484222325UL, Partition.Fnv1a64(""u8));
        Assert.Equal(0xaf63dc4c8601ec8cUL, Partition.Fnv1a64("a"u8));
        Assert.Equal(0x85944171f73967e8UL, Partition.Fnv1a64("foobar"u8));
    }

    [Fact]
    public void For_is_the_hash_of_the_utf8_key_modulo_the_partition_count()
    {
        Assert.Equal((int)(0xcbf29ce484222325UL % 1000), Partition.For("", 1000));
        Assert.Equal((int)(0xaf63dc4c8601ec8cUL % 1000), Partition.For("a", 1000));
        Assert.Equal((int)(0xaf63dc4c8601ec8cUL % 1024), Partition.For("a", 1024));
        Assert.Equal((int)(0xaf63dc4c8601ec8cUL % 7), Partition.For("a", 7));
        Assert.Equal(0, Partition.For("anything", 1));
        Assert.Equal((int)(Partition.Fnv1a64(Encoding.UTF8.GetBytes("é")) % 1024), Partition.For("é", 1024));
        Assert.Equal((int)(Partition.Fnv1a64([0xc3, 0xa9]) % 1024), Partition.For("é", 1024));
        Assert.Throws<ArgumentOutOfRangeException>(() => Partition.For("a", 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => Partition.For("a", -1));
        Assert.Throws<ArgumentNullException>(() => Partition.For(null!, 3));
    }

    [Fact]
    public async Task For_agrees_with_the_partitions_the_hub_chooses()
    {
        using var cts = Deadline();
        var ct = cts.Token;
        await using var client = fixture.NewClient();
        var keys = Enumerable.Range(0, 200).Select(i => $"key-{i}")
            .Concat(["a", "é", "ключ 1", "注文-42", "🙂 emoji", "50% off", new string('x', 1024), "K", "k"])
            .ToList();
        foreach (var count in new[] { 1, 2, 7, 16, 1024 })
        {
            var topic = Names.Topic("part");
            await client.CreateTopicAsync(topic, count, ct);
            var appended = await client.AppendAsync(topic, keys.Select(k => Ev(k)), cancellationToken: ct);
            for (var i = 0; i < keys.Count; i++)
            {
                Assert.True(Partition.For(keys[i], count) == appended.Results[i].Partition,
                    string.Create(CultureInfo.InvariantCulture, $"key {keys[i]} in a topic of {count}: the hub chose {appended.Results[i].Partition}, Partition.For {Partition.For(keys[i], count)}"));
            }
            // And every event is read back from that partition.
            var (events, _, _) = await ReadAllAsync(client, topic, Partition.For("ключ 1", count), Cursors.First, ct);
            Assert.Contains(events, e => e.Key == "ключ 1");
            Assert.All(events, e => Assert.Equal(Partition.For(e.Key, count), e.Partition));
        }
    }
}
