using System.Diagnostics;
using System.Text.RegularExpressions;

namespace EventHub.Client.Tests;

/// <summary>The client's README cannot drift from the code: every C# block in it is an example
/// program of <c>examples/</c>, verbatim, which the suite builds (and runs, for the first program),
/// and its SQL block is the cursor table the consumer creates.</summary>
[Collection("hub")]
public sealed partial class ReadmeTests(HubFixture fixture)
{
    private static readonly string ClientDirectory = Path.Combine(Hub.RepositoryRoot, "clients", "dotnet");

    private static string Readme => File.ReadAllText(Path.Combine(ClientDirectory, "README.md"));

    private static List<string> Blocks(string language) =>
        CodeBlock().Matches(Readme).Where(m => m.Groups[1].Value == language).Select(m => Normalize(m.Groups[2].Value)).ToList();

    private static string Normalize(string text) => text.Replace("\r\n", "\n", StringComparison.Ordinal).Trim();

    private static Dictionary<string, string> ExamplePrograms() =>
        Directory.GetFiles(Path.Combine(ClientDirectory, "examples"), "Program.cs", SearchOption.AllDirectories)
            .Where(p => !p.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal)
                && !p.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}", StringComparison.Ordinal))
            .ToDictionary(p => Path.GetRelativePath(ClientDirectory, p), p => Normalize(File.ReadAllText(p)));

    [Fact]
    public void Every_csharp_block_is_an_example_program_verbatim()
    {
        var programs = ExamplePrograms();
        var blocks = Blocks("csharp");
        Assert.NotEmpty(blocks);
        foreach (var block in blocks)
        {
            Assert.True(programs.ContainsValue(block), $"this C# block of README.md is no example's Program.cs; copy it from examples/ (or into it):\n{block}");
        }
        foreach (var (path, text) in programs)
        {
            Assert.True(blocks.Contains(text), $"{path} is not shown in README.md; show it verbatim in a ```csharp block");
        }
    }

    [Fact]
    public void The_sql_block_is_the_cursor_table_the_consumer_creates()
    {
        Assert.Contains(Normalize(CursorTable.CreateSql), Blocks("sql"));
    }

    [Fact]
    public async Task The_first_program_runs_as_written()
    {
        var output = await RunExampleAsync("FirstProgram", fixture.Hub.Address);
        Assert.Matches(@"(?m)^appended to partition \d+ in transaction \d+$", output);
        Assert.Contains("order-1 OrderPlaced {\"total\": 42}", output, StringComparison.Ordinal);
        Assert.Matches(@"(?m)^caught up at cursor \S+$", output);

        // It reads the partition its event landed in: the one Partition.For names.
        await using var client = fixture.NewClient();
        var topic = await client.GetTopicAsync("orders");
        var partition = Partition.For("order-1", topic.PartitionCount);
        Assert.Contains($"appended to partition {partition} ", output, StringComparison.Ordinal);
    }

    /// <summary>Runs the built example program <paramref name="name"/> with <paramref name="args"/>
    /// and returns its standard output; fails if it does not exit with 0 within two minutes.</summary>
    internal static async Task<string> RunExampleAsync(string name, params string[] args)
    {
        var configuration = AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Release{Path.DirectorySeparatorChar}", StringComparison.Ordinal) ? "Release" : "Debug";
        var dll = Path.Combine(ClientDirectory, "examples", name, "bin", configuration, "net10.0", name + ".dll");
        Assert.True(File.Exists(dll), $"{dll} is not built; build the solution first");
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.ArgumentList.Add(dll);
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{name} did not finish within 2 minutes; stderr:\n{await stderr}");
        }
        Assert.True(process.ExitCode == 0, $"{name} exited with {process.ExitCode}; stderr:\n{await stderr}\nstdout:\n{await stdout}");
        return await stdout;
    }

    [GeneratedRegex(@"^```(\w+)\n(.*?)^```", RegexOptions.Multiline | RegexOptions.Singleline)]
    private static partial Regex CodeBlock();
}
