using System.Text;
using EventHub.Client;

var address = args.Length > 0 ? args[0] : "http://127.0.0.1:50051";
await using var hub = new EventHubClient(address);

// Append an event. Its key decides the partition; the result says which.
var placed = new EventData("order-1", "OrderPlaced", Encoding.UTF8.GetBytes("""{"total": 42}"""))
{
    ContentType = "application/json",
    EventId = "place-order-1", // stored once, however often the Append is retried
};
var appended = await hub.AppendAsync("orders", placed);
var partition = appended.Results[0].Partition;
Console.WriteLine($"appended to partition {partition} in transaction {appended.TransactionId}");

// Read that partition from the beginning. Each page ends with the cursor to store.
var cursor = Cursors.First;
await foreach (var page in hub.ReadPartitionAsync("orders", partition, cursor))
{
    foreach (var e in page.Events)
    {
        Console.WriteLine($"{e.Sequence}: {e.Key} {e.Type} {Encoding.UTF8.GetString(e.Payload.Span)}");
    }
    cursor = page.Cursor;
}

// Follow it: pages come as events commit, and an empty heartbeat page when none does.
var follow = new FollowOptions { Heartbeat = TimeSpan.FromSeconds(1) };
await foreach (var page in hub.FollowAsync("orders", partition, cursor, follow))
{
    if (page.IsEmpty)
    {
        Console.WriteLine($"caught up at cursor {page.Cursor}");
        break;
    }
    foreach (var e in page.Events)
    {
        Console.WriteLine($"{e.Sequence}: {e.Key} {e.Type}");
    }
}
