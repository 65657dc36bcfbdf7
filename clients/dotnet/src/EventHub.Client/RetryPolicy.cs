namespace EventHub.Client;

/// <summary>
/// How calls are retried when the hub answers UNAVAILABLE (it is restarting, or its database is
/// unreachable) and, for follow reads, when the stream breaks (the hub ends it while shutting down,
/// or nothing arrives for three heartbeat intervals). A stream is reopened right after the last
/// page it delivered, so nothing is skipped or repeated. Other errors are never retried, and an
/// Append is retried only when every event carries an event id.
/// </summary>
/// <remarks>
/// The n-th retry waits a random time up to <c>min(MaxBackoff, InitialBackoff * Multiplier^n)</c>
/// (full jitter). A stream that delivers a page (a heartbeat included) counts its attempts afresh.
/// </remarks>
public sealed record RetryPolicy
{
    /// <summary>The client's default: up to 8 tries, giving up after about 6 to 11 seconds.</summary>
    public static RetryPolicy Default { get; } = new();

    /// <summary>No retries: the first failure is thrown.</summary>
    public static RetryPolicy None { get; } = new() { MaxAttempts = 1 };

    /// <summary>Retries without end, at most 5 seconds apart: the <see cref="Consumer"/>'s default,
    /// so that it outlives restarts and outages of the hub.</summary>
    public static RetryPolicy Forever { get; } = new() { MaxAttempts = null };

    /// <summary>The most tries of one call, the first included; 1 disables retries and
    /// <see langword="null"/> retries without end.</summary>
    public int? MaxAttempts { get; init; } = 8;

    /// <summary>The ceiling of the first retry's delay.</summary>
    public TimeSpan InitialBackoff { get; init; } = TimeSpan.FromMilliseconds(100);

    /// <summary>The largest delay between two tries.</summary>
    public TimeSpan MaxBackoff { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>How much the delay's ceiling grows with each retry.</summary>
    public double Multiplier { get; init; } = 2.0;

    /// <summary>Whether a call that failed on (0-based) <paramref name="attempt"/> may be tried again.</summary>
    public bool AllowsRetry(int attempt) => MaxAttempts is null || attempt + 1 < MaxAttempts;

    /// <summary>The delay before retry number <paramref name="retry"/> (0-based): a random time up to
    /// <c>min(MaxBackoff, InitialBackoff * Multiplier^retry)</c>.</summary>
    public TimeSpan Backoff(int retry)
    {
        var ceiling = InitialBackoff.TotalSeconds * Math.Pow(Multiplier, Math.Min(retry, 64));
        if (double.IsNaN(ceiling) || double.IsInfinity(ceiling) || ceiling > MaxBackoff.TotalSeconds)
        {
            ceiling = MaxBackoff.TotalSeconds;
        }
        return TimeSpan.FromSeconds(Random.Shared.NextDouble() * Math.Max(ceiling, 0));
    }
}
