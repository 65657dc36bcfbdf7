using System.Data.Common;

namespace EventHub.Client;

/// <summary>
/// The table where a <see cref="Consumer"/> keeps its cursors, in your own database:
/// <c>eventhub_cursors(consumer, topic, partition, cursor)</c> with the primary key
/// <c>(consumer, topic, partition)</c>, the same table the Python and Go clients use. The SQL is
/// plain enough for SQLite 3.24 or later (<c>Microsoft.Data.Sqlite</c>) and PostgreSQL 9.5 or
/// later (<c>Npgsql</c>), and for any ADO.NET provider that takes <c>@name</c> parameters,
/// <c>CREATE TABLE IF NOT EXISTS</c> and <c>INSERT … ON CONFLICT DO NOTHING</c>.
/// </summary>
public static class CursorTable
{
    /// <summary>The table's name.</summary>
    public const string Name = "eventhub_cursors";

    /// <summary>The statement that creates the table; the consumer runs it on first use.</summary>
    public const string CreateSql = """
        CREATE TABLE IF NOT EXISTS eventhub_cursors (
            consumer TEXT NOT NULL,
            topic TEXT NOT NULL,
            "partition" INTEGER NOT NULL,
            "cursor" TEXT NOT NULL,
            PRIMARY KEY (consumer, topic, "partition")
        )
        """;

    private const string Where = """consumer = @consumer AND topic = @topic AND "partition" = @partition""";
    private const string SelectSql = $"""SELECT "cursor" FROM eventhub_cursors WHERE {Where}""";
    // A row inserted meanwhile by another consumer of the group is a conflict, not a key violation.
    private const string InsertSql = """INSERT INTO eventhub_cursors (consumer, topic, "partition", "cursor") VALUES (@consumer, @topic, @partition, @cursor) ON CONFLICT (consumer, topic, "partition") DO NOTHING""";
    private const string UpdateSql = $"""UPDATE eventhub_cursors SET "cursor" = @cursor WHERE {Where} AND "cursor" = @previous""";

    /// <summary>Creates the table if it does not exist, in a transaction of its own.</summary>
    public static async Task CreateAsync(DbConnection connection, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(connection);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        await using (var command = Command(transaction, CreateSql))
        {
            await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }
        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The stored cursor of <paramref name="consumer"/> on one partition, or
    /// <see langword="null"/> when it has none yet.</summary>
    public static async Task<string?> LoadAsync(DbTransaction transaction, string consumer, string topic, int partition, CancellationToken cancellationToken = default)
    {
        await using var command = Command(transaction, SelectSql, ("consumer", consumer), ("topic", topic), ("partition", partition));
        var value = await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false);
        return value is null or DBNull ? null : Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>Stores <paramref name="cursor"/> in place of <paramref name="previous"/> (none
    /// stored yet when <see langword="null"/>).</summary>
    /// <exception cref="CursorConflictException">The stored cursor is no longer
    /// <paramref name="previous"/> (or, with <paramref name="previous"/> <see langword="null"/>,
    /// a cursor is stored already): another consumer of the same group processed the partition.
    /// Roll the transaction back.</exception>
    public static async Task SaveAsync(DbTransaction transaction, string consumer, string topic, int partition, string? previous, string cursor, CancellationToken cancellationToken = default)
    {
        await using var command = previous is null
            ? Command(transaction, InsertSql, ("consumer", consumer), ("topic", topic), ("partition", partition), ("cursor", cursor))
            : Command(transaction, UpdateSql, ("consumer", consumer), ("topic", topic), ("partition", partition), ("cursor", cursor), ("previous", previous));
        if (await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) != 1)
        {
            throw new CursorConflictException(
                $"the cursor of consumer '{consumer}', topic '{topic}', partition {partition} is no longer the one this consumer read from: another consumer of the same group processed the partition");
        }
    }

    private static DbCommand Command(DbTransaction transaction, string sql, params (string Name, object Value)[] parameters)
    {
        ArgumentNullException.ThrowIfNull(transaction);
        var connection = transaction.Connection ?? throw new InvalidOperationException("the transaction is no longer open");
        var command = connection.CreateCommand();
        command.Transaction = transaction;
#pragma warning disable CA2100 // The SQL is this class's constants; values go in as parameters.
        command.CommandText = sql;
#pragma warning restore CA2100
        foreach (var (name, value) in parameters)
        {
            var parameter = command.CreateParameter();
            parameter.ParameterName = "@" + name;
            parameter.Value = value;
            command.Parameters.Add(parameter);
        }
        return command;
    }
}
