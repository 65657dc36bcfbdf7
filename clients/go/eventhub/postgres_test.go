package eventhub_test

import (
	"database/sql"
	"fmt"
	"os"
	"testing"

	"github.com/eventhub/eventhub/clients/go/eventhub"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// openPostgres returns two handles on a schema of its own in the
// PostgreSQL database named by EVENTHUB_TEST_POSTGRES_DSN (e.g.
// postgres://postgres@127.0.0.1:5432/postgres), holding the cursor table
// and the table applied; the schema is dropped when the test ends. Without
// the variable the test is skipped, unless EVENTHUB_TEST_REQUIRE_POSTGRES
// is set (as scripts/test.sh does): then it fails.
func openPostgres(t *testing.T) (*sql.DB, *sql.DB) {
	t.Helper()
	dsn := os.Getenv("EVENTHUB_TEST_POSTGRES_DSN")
	if dsn == "" {
		if os.Getenv("EVENTHUB_TEST_REQUIRE_POSTGRES") != "" {
			t.Fatal("EVENTHUB_TEST_POSTGRES_DSN is not set, and EVENTHUB_TEST_REQUIRE_POSTGRES is")
		}
		t.Skip("EVENTHUB_TEST_POSTGRES_DSN is not set")
	}
	config, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	schema := fmt.Sprintf("eventhub_go_test_%d_%d", os.Getpid(), topicSeq.Add(1))
	admin := stdlib.OpenDB(*config)
	t.Cleanup(func() {
		if _, err := admin.Exec(`DROP SCHEMA IF EXISTS ` + schema + ` CASCADE`); err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
		}
		admin.Close()
	})
	if _, err := admin.ExecContext(ctx, `CREATE SCHEMA `+schema); err != nil {
		t.Fatal(err)
	}
	config.RuntimeParams["search_path"] = schema
	open := func() *sql.DB {
		db := stdlib.OpenDB(*config)
		t.Cleanup(func() { db.Close() })
		return db
	}
	a, b := open(), open()
	if err := eventhub.CreateCursorTable(ctx, a, eventhub.Postgres); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ExecContext(ctx, `CREATE TABLE applied ("partition" integer, sequence bigint, key text)`); err != nil {
		t.Fatal(err)
	}
	return a, b
}
