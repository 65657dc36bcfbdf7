using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;

namespace EventHub.Client.Tests;

/// <summary>A real hub process: <c>$EVENTHUB_BIN serve</c> (by default the repository's
/// <c>target/debug/eventhub</c>) on a free loopback port with a SQLite file in its own directory.</summary>
public sealed partial class Hub : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _log = new();

    private Hub(Process process, string target, string directory)
    {
        _process = process;
        Target = target;
        Directory = directory;
    }

    /// <summary>The repository's root (the directory holding Cargo.toml).</summary>
    public static string RepositoryRoot { get; } = FindRoot();

    /// <summary>The hub binary the tests run.</summary>
    public static string Binary { get; } =
        Environment.GetEnvironmentVariable("EVENTHUB_BIN") is { Length: > 0 } bin ? bin : Path.Combine(RepositoryRoot, "target", "debug", "eventhub");

    /// <summary><c>127.0.0.1:PORT</c>.</summary>
    public string Target { get; }

    /// <summary><c>http://127.0.0.1:PORT</c>, for <see cref="EventHubClient"/>.</summary>
    public string Address => "http://" + Target;

    /// <summary>The directory of the hub's SQLite file.</summary>
    public string Directory { get; }

    /// <summary>The process id.</summary>
    public int Pid => _process.Id;

    /// <summary>What the hub wrote to stderr so far (its last 4,000 characters).</summary>
    public string LogTail()
    {
        lock (_log)
        {
            var s = _log.ToString();
            return s.Length > 4000 ? s[^4000..] : s;
        }
    }

    /// <summary>A new empty directory under the system's temporary directory.</summary>
    public static string NewDirectory()
    {
        var dir = Path.Combine(Path.GetTempPath(), "eventhub-dotnet-" + Guid.NewGuid().ToString("N")[..12]);
        System.IO.Directory.CreateDirectory(dir);
        return dir;
    }

    /// <summary>Starts <c>eventhub serve</c> on <paramref name="listen"/> with the SQLite database in
    /// <paramref name="directory"/> (a new one by default) and waits for its "listening" line.</summary>
    public static async Task<Hub> StartAsync(string? directory = null, string listen = "127.0.0.1:0", params string[] extra)
    {
        if (!File.Exists(Binary))
        {
            throw new InvalidOperationException($"no hub binary at {Binary}; build it (cargo build) or set EVENTHUB_BIN");
        }
        directory ??= NewDirectory();
        var info = new ProcessStartInfo(Binary)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var arg in new[] { "serve", "--listen", listen, "--database", "sqlite://" + Path.Combine(directory, "hub.db") }.Concat(extra))
        {
            info.ArgumentList.Add(arg);
        }
        var process = Process.Start(info) ?? throw new InvalidOperationException($"could not start {Binary}");
        var log = new StringBuilder();
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null)
            {
                return;
            }
            lock (log)
            {
                log.AppendLine(e.Data);
            }
        };
        process.BeginErrorReadLine();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        string? line;
        try
        {
            line = await process.StandardOutput.ReadLineAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            line = null;
        }
        var match = line is null ? Match.Empty : Listening().Match(line.Trim());
        if (!match.Success)
        {
            process.Kill();
            await process.WaitForExitAsync();
            string tail;
            lock (log)
            {
                tail = log.ToString();
            }
            throw new InvalidOperationException($"{Binary} did not print 'eventhub listening on 127.0.0.1:PORT' (got '{line}'); its log:\n{tail}");
        }
        // Keep draining stdout so the hub never blocks on a full pipe.
        _ = process.StandardOutput.BaseStream.CopyToAsync(Stream.Null);
        var hub = new Hub(process, match.Groups[1].Value, directory);
        lock (hub._log)
        {
            hub._log.Append(log);
        }
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null)
            {
                return;
            }
            lock (hub._log)
            {
                hub._log.AppendLine(e.Data);
            }
        };
        return hub;
    }

    /// <summary>Stops the hub with SIGTERM and returns its exit code.</summary>
    public async Task<int> StopAsync()
    {
        if (!_process.HasExited)
        {
            _ = Kill(_process.Id, 15);
        }
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        try
        {
            await _process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            _process.Kill();
            await _process.WaitForExitAsync();
            throw new InvalidOperationException($"the hub did not stop within 30 s of SIGTERM; its log:\n{LogTail()}");
        }
        return _process.ExitCode;
    }

    /// <summary>Kills the hub with SIGKILL and waits for it to be gone.</summary>
    public async Task KillAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill();
        }
        await _process.WaitForExitAsync();
    }

    /// <summary>Sends <paramref name="signal"/> (SIGSTOP 19, SIGCONT 18 …) to the hub.</summary>
    public void Signal(int signal) => _ = Kill(_process.Id, signal);

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            Signal(18);
            await KillAsync();
        }
        _process.Dispose();
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);

    [GeneratedRegex(@"^eventhub listening on (127\.0\.0\.1:\d+)$")]
    private static partial Regex Listening();

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Cargo.toml")) && System.IO.Directory.Exists(Path.Combine(dir.FullName, "proto")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException($"no repository root (a directory with Cargo.toml and proto/) above {AppContext.BaseDirectory}");
    }
}

/// <summary>One hub shared by the tests of the "hub" collection, with 3 partitions by default.</summary>
public sealed class HubFixture : IAsyncLifetime
{
    /// <summary>The default partition count of the shared hub's auto-created topics.</summary>
    public const int DefaultPartitions = 3;

    private Hub? _hub;

    /// <summary>The shared hub.</summary>
    public Hub Hub => _hub ?? throw new InvalidOperationException("the hub has not started");

    /// <summary>A new client of the shared hub (dispose it).</summary>
    public EventHubClient NewClient(EventHubClientSettings? settings = null) =>
        new((settings ?? new EventHubClientSettings()) with { Address = Hub.Address });

    /// <inheritdoc />
    public async Task InitializeAsync() =>
        _hub = await Hub.StartAsync(extra: ["--default-partitions", DefaultPartitions.ToString(System.Globalization.CultureInfo.InvariantCulture)]);

    /// <inheritdoc />
    public async Task DisposeAsync()
    {
        if (_hub is null)
        {
            return;
        }
        var code = await _hub.StopAsync();
        var log = _hub.LogTail();
        await _hub.DisposeAsync();
        Assert.True(code == 0, $"the hub exited with {code} on SIGTERM; its log:\n{log}");
    }
}

/// <summary>The tests that share one hub.</summary>
[CollectionDefinition("hub")]
public sealed class SharedHub : ICollectionFixture<HubFixture>;

/// <summary>Helpers shared by the tests.</summary>
public static class Names
{
    /// <summary>A topic name no other test uses.</summary>
    public static string Topic(string prefix = "t") => $"{prefix}-{Guid.NewGuid():N}"[..Math.Min(prefix.Length + 13, 200)];
}
