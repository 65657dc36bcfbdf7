using System.Text;

namespace EventHub.Client;

/// <summary>The partition a key's events land in, as the proto specifies it:
/// <c>fnv1a_64(utf8(key)) % partitionCount</c>.</summary>
public static class Partition
{
    private const ulong FnvOffset = 0xcbf29ce484222325;
    private const ulong FnvPrime = 0x100000001b3;

    /// <summary>The partition of <paramref name="key"/> in a topic of
    /// <paramref name="partitionCount"/> partitions.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="partitionCount"/> is below 1.</exception>
    public static int For(string key, int partitionCount)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentOutOfRangeException.ThrowIfLessThan(partitionCount, 1);
        return (int)(Fnv1a64(Encoding.UTF8.GetBytes(key)) % (ulong)partitionCount);
    }

    /// <summary>64-bit FNV-1a of <paramref name="data"/>.</summary>
    public static ulong Fnv1a64(ReadOnlySpan<byte> data)
    {
        var h = FnvOffset;
        foreach (var b in data)
        {
            h = unchecked((h ^ b) * FnvPrime);
        }
        return h;
    }
}
