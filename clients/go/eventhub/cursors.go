package eventhub

import (
	"context"
	"database/sql"
	_ "embed"
	"fmt"
	"strings"
)

// Dialect is the SQL flavour of the database holding a consumer's cursors.
type Dialect int

const (
	// SQLite uses `?` placeholders.
	SQLite Dialect = iota
	// Postgres uses `$1`, `$2`, … placeholders.
	Postgres
)

var (
	//go:embed sql/cursors_sqlite.sql
	cursorsSQLite string
	//go:embed sql/cursors_postgres.sql
	cursorsPostgres string
)

// CursorTableDDL returns the statement creating the table eventhub_cursors
// (consumer, topic, partition, cursor) if it does not exist.
func (d Dialect) CursorTableDDL() string {
	if d == Postgres {
		return cursorsPostgres
	}
	return cursorsSQLite
}

// CreateCursorTable creates the table eventhub_cursors if it does not exist.
func CreateCursorTable(ctx context.Context, db *sql.DB, d Dialect) error {
	_, err := db.ExecContext(ctx, d.CursorTableDDL())
	return err
}

// Rebind rewrites a query written with `?` placeholders for d.
func (d Dialect) Rebind(query string) string {
	if d != Postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// querier is what loading and storing cursors needs of *sql.DB and *sql.Tx.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// loadCursors returns the stored cursor of each partition of topic.
func loadCursors(ctx context.Context, q querier, d Dialect, consumer, topic string) (map[uint32]string, error) {
	rows, err := q.QueryContext(ctx, d.Rebind(
		`SELECT "partition", "cursor" FROM eventhub_cursors WHERE consumer = ? AND topic = ?`),
		consumer, topic)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cursors := map[uint32]string{}
	for rows.Next() {
		var p int64
		var c string
		if err := rows.Scan(&p, &c); err != nil {
			return nil, err
		}
		cursors[uint32(p)] = c
	}
	return cursors, rows.Err()
}

// storeCursor replaces the stored cursor previous of one partition by
// cursor; with previous empty, it inserts the partition's first cursor. If
// the stored cursor is no longer previous (or a row was inserted
// meanwhile), another consumer of the same name stored its own: storeCursor
// changes nothing and returns a *CursorConflictError.
func storeCursor(ctx context.Context, q querier, d Dialect, consumer, topic string, partition uint32, previous, cursor string) error {
	var res sql.Result
	var err error
	if previous == "" {
		res, err = q.ExecContext(ctx, d.Rebind(
			`INSERT INTO eventhub_cursors (consumer, topic, "partition", "cursor") VALUES (?, ?, ?, ?)
			 ON CONFLICT (consumer, topic, "partition") DO NOTHING`),
			consumer, topic, int64(partition), cursor)
	} else {
		res, err = q.ExecContext(ctx, d.Rebind(
			`UPDATE eventhub_cursors SET "cursor" = ?
			 WHERE consumer = ? AND topic = ? AND "partition" = ? AND "cursor" = ?`),
			cursor, consumer, topic, int64(partition), previous)
	}
	if err != nil {
		return fmt.Errorf("storing the cursor: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("storing the cursor: %w", err)
	}
	if n != 1 {
		return &CursorConflictError{Consumer: consumer, Topic: topic, Partition: partition, Expected: previous}
	}
	return nil
}
