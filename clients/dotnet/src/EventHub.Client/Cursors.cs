namespace EventHub.Client;

/// <summary>The two reserved cursors. Any other cursor comes from the hub (a page, an event or an
/// append result): store it verbatim and hand it back; do not build or parse it.</summary>
public static class Cursors
{
    /// <summary>Before the first event of a partition.</summary>
    public const string First = "_first";

    /// <summary>The head of the partition at the time of the call.</summary>
    public const string Last = "_last";
}
