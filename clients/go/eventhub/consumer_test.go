package eventhub_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eventhub/eventhub/clients/go/eventhub"
	pb "github.com/eventhub/eventhub/clients/go/eventhubv1"
	"github.com/eventhub/eventhub/clients/go/internal/testhub"
	_ "modernc.org/sqlite"
)

// openDB opens a fresh SQLite database with the cursor table and a table
// of applied events.
func openDB(t *testing.T) *sql.DB {
	t.Helper()
	return openSQLite(t, filepath.Join(t.TempDir(), "app.db"))
}

// openSQLite opens the SQLite database at path, creating the cursor table
// and the table applied if they do not exist.
func openSQLite(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	ctx := testCtx(t)
	if err := eventhub.CreateCursorTable(ctx, db, eventhub.SQLite); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS applied (partition INTEGER, sequence INTEGER, key TEXT)`); err != nil {
		t.Fatal(err)
	}
	return db
}

// record is a Handler inserting every event into the table applied.
func record(ctx context.Context, tx *sql.Tx, page *pb.ReadPartitionResponse) error {
	return recorder(eventhub.SQLite)(ctx, tx, page)
}

// recorder returns a Handler inserting every event into the table applied
// of a database of dialect d.
func recorder(d eventhub.Dialect) eventhub.Handler {
	insert := d.Rebind(`INSERT INTO applied VALUES (?, ?, ?)`)
	return func(ctx context.Context, tx *sql.Tx, page *pb.ReadPartitionResponse) error {
		for _, e := range page.Events {
			if _, err := tx.ExecContext(ctx, insert, int64(e.Partition), int64(e.Sequence), e.Key); err != nil {
				return err
			}
		}
		return nil
	}
}

// errStop is what untilStop's Handler ends a consumer with.
var errStop = errors.New("the Stop event")

// untilStop wraps a Handler: on a page holding an event of type Stop it
// returns errStop, which rolls the page back and ends Run. With MaxEvents
// 1 that page holds nothing else, so every earlier event is committed and
// no later one is read: a run that ends at a known point without timing.
func untilStop(h eventhub.Handler) eventhub.Handler {
	return func(ctx context.Context, tx *sql.Tx, page *pb.ReadPartitionResponse) error {
		for _, e := range page.Events {
			if e.Type == "Stop" {
				return errStop
			}
		}
		return h(ctx, tx, page)
	}
}

// count returns the rows and distinct positions of the table applied.
func count(t *testing.T, db *sql.DB) (rows, distinct int) {
	t.Helper()
	err := db.QueryRow(`SELECT count(*), count(DISTINCT partition || '/' || sequence) FROM applied`).Scan(&rows, &distinct)
	if err != nil {
		t.Fatal(err)
	}
	return rows, distinct
}

// appendN appends n events spread over many keys, in batches of 10.
func appendN(t *testing.T, c *eventhub.Client, topic string, from, n int) {
	t.Helper()
	for i := from; i < from+n; i += 10 {
		var batch []*pb.AppendEvent
		for j := i; j < min(i+10, from+n); j++ {
			batch = append(batch, ev(fmt.Sprintf("key-%d", j%37), "T", fmt.Sprint(j)))
		}
		if _, err := c.Append(testCtx(t), topic, batch); err != nil {
			t.Fatalf("Append(%q): %v", topic, err)
		}
	}
}

// start runs c in the background; the returned stop cancels it and
// returns what Run returned.
func start(t *testing.T, c *eventhub.Consumer) (stop func() error) {
	ctx, cancel := context.WithCancel(testCtx(t))
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	return func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(20 * time.Second):
			t.Fatal("Consumer.Run did not return within 20s of cancel")
			return nil
		}
	}
}

// A consumer applies every event once across restarts and leaves the
// partitions' head cursors in its table.
func TestConsumer(t *testing.T) {
	topic := newTopic(t, 4)
	db := openDB(t)
	c := &eventhub.Consumer{Client: client, DB: db, Name: "test", Topic: topic, MaxEvents: 7, Handler: record}
	appendN(t, client, topic, 0, 100)
	stop := start(t, c)
	appendN(t, client, topic, 100, 100)
	waitFor(t, "200 applied events", 30*time.Second, func() bool { n, _ := count(t, db); return n >= 200 })
	if err := stop(); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}

	appendN(t, client, topic, 200, 50)
	stop = start(t, c)
	waitFor(t, "250 applied events", 30*time.Second, func() bool { n, _ := count(t, db); return n >= 250 })
	if err := stop(); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	if rows, distinct := count(t, db); rows != 250 || distinct != 250 {
		t.Fatalf("applied %d rows for %d distinct events, want 250 each", rows, distinct)
	}

	info, err := client.GetTopic(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range info.Partitions {
		var stored string
		err := db.QueryRow(`SELECT "cursor" FROM eventhub_cursors WHERE consumer = 'test' AND topic = ? AND "partition" = ?`, topic, p.Partition).Scan(&stored)
		if err != nil || stored != p.HeadCursor {
			t.Errorf("partition %d: stored cursor %q (%v), want the head %q", p.Partition, stored, err, p.HeadCursor)
		}
	}
}

// A Handler error rolls its page back and stops the consumer with it.
func TestConsumerHandlerError(t *testing.T) {
	topic := newTopic(t, 1)
	db := openDB(t)
	appendN(t, client, topic, 0, 10)
	boom := errors.New("boom")
	c := &eventhub.Consumer{Client: client, DB: db, Name: "test", Topic: topic, MaxEvents: 4,
		Handler: func(ctx context.Context, tx *sql.Tx, page *pb.ReadPartitionResponse) error {
			if err := record(ctx, tx, page); err != nil {
				return err
			}
			if page.Events[len(page.Events)-1].Sequence > 4 {
				return boom
			}
			return nil
		}}
	if err := c.Run(testCtx(t)); !errors.Is(err, boom) {
		t.Fatalf("Run: %v, want boom", err)
	}
	if rows, _ := count(t, db); rows != 4 {
		t.Fatalf("%d rows applied, want the first page's 4", rows)
	}
}

// StartAt Last skips what was there before; Partitions limits the reading.
func TestConsumerStartAtLastAndSubset(t *testing.T) {
	topic := newTopic(t, 2)
	db := openDB(t)
	k0, k1 := keyIn(0, 2), keyIn(1, 2)
	mustAppend(t, topic, ev(k0, "Old", "x"), ev(k1, "Old", "x"))
	c := &eventhub.Consumer{Client: client, DB: db, Name: "late", Topic: topic, Partitions: []uint32{1}, StartAt: eventhub.Last, Handler: record}
	stop := start(t, c)
	waitFor(t, "the start cursor to be stored", 10*time.Second, func() bool {
		var n int
		db.QueryRow(`SELECT count(*) FROM eventhub_cursors WHERE consumer = 'late'`).Scan(&n)
		return n == 1
	})
	mustAppend(t, topic, ev(k0, "New", "x"), ev(k1, "New", "x"), ev(k1, "New", "y"))
	waitFor(t, "2 applied events", 10*time.Second, func() bool { n, _ := count(t, db); return n >= 2 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	var keys string
	db.QueryRow(`SELECT group_concat(key || '/' || partition || '/' || sequence, ' ') FROM applied`).Scan(&keys)
	if want := fmt.Sprintf("%s/1/2 %s/1/3", k1, k1); keys != want {
		t.Fatalf("applied %q, want %q", keys, want)
	}
}

// A consumer with the default retry policy rides through a restart of its
// hub (it retries without limit while the hub is away, reporting each
// failure to its Logger) and applies every event once.
func TestConsumerSurvivesHubRestart(t *testing.T) {
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	h, err := testhub.Start(dir, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if h != nil {
			h.Kill()
		}
	}()
	c, err := eventhub.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, _, err := c.CreateTopic(testCtx(t), "restart", 3); err != nil {
		t.Fatal(err)
	}

	db := openDB(t)
	logs := make(logLines, 1000)
	stop := start(t, &eventhub.Consumer{Client: c, DB: db, Name: "test", Topic: "restart", Handler: record, Logger: logs.logger()})
	appendN(t, c, "restart", 0, 30)
	waitFor(t, "30 applied events", 30*time.Second, func() bool { n, _ := count(t, db); return n >= 30 })
	if err := h.Stop(); err != nil {
		t.Fatalf("stopping the hub with SIGTERM: %v\n%s", err, h.Tail())
	}
	if h, err = testhub.Start(dir, addr); err != nil {
		t.Fatal(err)
	}
	// Appends are not retried: wait until the connection is back.
	if _, err := c.GetTopic(testCtx(t), "restart"); err != nil {
		t.Fatal(err)
	}
	appendN(t, c, "restart", 30, 30)
	waitFor(t, "60 applied events", 30*time.Second, func() bool { n, _ := count(t, db); return n >= 60 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if rows, distinct := count(t, db); rows != 60 || distinct != 60 {
		t.Fatalf("applied %d rows for %d distinct events, want 60 each", rows, distinct)
	}
	// The hub's shutdown broke each partition's follow stream.
	if reports := logs.drain(); !strings.Contains(reports, "reading failed; retrying") {
		t.Fatalf("no retried failure reported to the Logger; it got:\n%s", reports)
	}
}

// Rebind turns `?` placeholders into PostgreSQL's `$n`.
func TestRebind(t *testing.T) {
	q := `SELECT a FROM t WHERE b = ? AND c = ?`
	if got := eventhub.SQLite.Rebind(q); got != q {
		t.Errorf("SQLite.Rebind = %q", got)
	}
	if got, want := eventhub.Postgres.Rebind(q), `SELECT a FROM t WHERE b = $1 AND c = $2`; got != want {
		t.Errorf("Postgres.Rebind = %q, want %q", got, want)
	}
}

// A backend is a database the consumer's cursors are tested on.
type backend struct {
	name    string
	dialect eventhub.Dialect
	// open returns two handles on one fresh database holding the cursor
	// table and the table applied, as two processes would have them.
	open func(t *testing.T) (*sql.DB, *sql.DB)
}

// backends are SQLite, and PostgreSQL when EVENTHUB_TEST_POSTGRES_DSN
// names a database (see openPostgres).
var backends = []backend{
	{"sqlite", eventhub.SQLite, func(t *testing.T) (*sql.DB, *sql.DB) {
		path := filepath.Join(t.TempDir(), "app.db")
		return openSQLite(t, path), openSQLite(t, path)
	}},
	{"postgres", eventhub.Postgres, openPostgres},
}

// Two consumers with the same name (replicas, or the old and the new
// instance of a rolling deploy) never both apply a page: the one that
// commits second gets a *CursorConflictError, and its transaction, with its
// Handler's effects, is rolled back. This holds for a partition's first
// cursor (an insert) and for a stored one (an update).
func TestConsumerCursorConflict(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name+"/first-cursor", func(t *testing.T) { testCursorConflict(t, b, false) })
		t.Run(b.name+"/stored-cursor", func(t *testing.T) { testCursorConflict(t, b, true) })
	}
}

func testCursorConflict(t *testing.T, b backend, stored bool) {
	ctx := testCtx(t)
	dbA, dbB := b.open(t)
	topic := newTopic(t, 1)
	expected := ""
	if stored {
		expected = eventhub.First
		if _, err := dbA.ExecContext(ctx, b.dialect.Rebind(`INSERT INTO eventhub_cursors VALUES (?, ?, ?, ?)`),
			"twin", topic, 0, expected); err != nil {
			t.Fatal(err)
		}
	}
	first := mustAppend(t, topic, ev("k", "T", "1")).Results[0]
	mustAppend(t, topic, ev("k", "T", "2"))
	await := func(what string, ch <-chan struct{}, failed <-chan error) {
		t.Helper()
		select {
		case <-ch:
		case err := <-failed:
			t.Fatalf("waiting for %s: Run returned %v", what, err)
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		}
	}

	// B reads the first page and holds it, in its transaction, unapplied.
	bHolds, releaseB := make(chan struct{}), make(chan struct{})
	consumerB := &eventhub.Consumer{Client: client, DB: dbB, Dialect: b.dialect, Name: "twin", Topic: topic, MaxEvents: 1,
		Handler: func(ctx context.Context, tx *sql.Tx, page *pb.ReadPartitionResponse) error {
			if page.Events[0].Sequence != 1 {
				return fmt.Errorf("B committed the first page and went on to event %d", page.Events[0].Sequence)
			}
			close(bHolds)
			select {
			case <-releaseB:
			case <-ctx.Done():
				return ctx.Err()
			}
			return recorder(b.dialect)(ctx, tx, page)
		}}
	bDone := make(chan error, 1)
	go func() { bDone <- consumerB.Run(ctx) }()
	await("B to hold the first page", bHolds, bDone)

	// A applies the first page: reaching the second means it committed it.
	aAtSecond := make(chan struct{})
	consumerA := &eventhub.Consumer{Client: client, DB: dbA, Dialect: b.dialect, Name: "twin", Topic: topic, MaxEvents: 1,
		Handler: func(ctx context.Context, tx *sql.Tx, page *pb.ReadPartitionResponse) error {
			if page.Events[0].Sequence == 2 {
				close(aAtSecond)
				<-ctx.Done()
				return ctx.Err()
			}
			return recorder(b.dialect)(ctx, tx, page)
		}}
	stopA := start(t, consumerA)
	await("A to commit the first page", aAtSecond, nil)

	// B now applies the first page too, and must fail to commit it.
	close(releaseB)
	var err error
	select {
	case err = <-bDone:
	case <-ctx.Done():
		t.Fatalf("B's Run did not return: %v", ctx.Err())
	}
	var conflict *eventhub.CursorConflictError
	if !errors.As(err, &conflict) || conflict.Consumer != "twin" || conflict.Topic != topic ||
		conflict.Partition != 0 || conflict.Expected != expected {
		t.Fatalf("B's Run: %v; want a *CursorConflictError expecting %q", err, expected)
	}
	if err := stopA(); err != nil {
		t.Fatalf("A's Run: %v", err)
	}

	var sequences []int64
	rows, err := dbA.QueryContext(ctx, `SELECT sequence FROM applied ORDER BY sequence`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var s int64
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		sequences = append(sequences, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(sequences) != "[1]" {
		t.Fatalf("applied sequences %v; want [1], applied once by A (B's effects rolled back)", sequences)
	}
	var cursor string
	if err := dbA.QueryRowContext(ctx, b.dialect.Rebind(`SELECT "cursor" FROM eventhub_cursors WHERE consumer = ? AND topic = ?`),
		"twin", topic).Scan(&cursor); err != nil || cursor != first.Cursor {
		t.Fatalf("stored cursor %q (%v); want A's, after the first event: %q", cursor, err, first.Cursor)
	}
}

// A partition listed more than once in Partitions is read once, so each
// of its events is applied once (and not refused as a cursor conflict).
func TestConsumerDuplicatePartitions(t *testing.T) {
	topic := newTopic(t, 2)
	db := openDB(t)
	appendN(t, client, topic, 0, 30)
	mustAppend(t, topic, ev(keyIn(1, 2), "Stop", ""))
	want := 0
	for j := range 30 {
		if eventhub.PartitionFor(fmt.Sprintf("key-%d", j%37), 2) == 1 {
			want++
		}
	}
	c := &eventhub.Consumer{Client: client, DB: db, Name: "test", Topic: topic, Partitions: []uint32{1, 1, 1},
		MaxEvents: 1, Handler: untilStop(record)}
	if err := c.Run(testCtx(t)); !errors.Is(err, errStop) {
		t.Fatalf("Run: %v; want it ended by the Stop event", err)
	}
	if rows, distinct := count(t, db); rows != want || distinct != want {
		t.Fatalf("applied %d rows for %d distinct events; want the %d events of partition 1 once each", rows, distinct, want)
	}
}

// With a Types filter, a consumer still receives invalidation markers: it
// adds $invalidation to the types it asks for (without changing Types).
func TestConsumerTypesKeepInvalidationMarkers(t *testing.T) {
	ctx := testCtx(t)
	topic := newTopic(t, 1)
	bad := mustAppend(t, topic, ev("a", "Keep", "1"), ev("b", "Skip", "2"))
	if _, err := client.Invalidate(ctx, topic, bad.TransactionId, "wrong"); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, topic, ev("c", "Skip", "3"), ev("d", "Stop", "4"))
	var seen []string
	c := &eventhub.Consumer{Client: client, DB: openDB(t), Name: "test", Topic: topic, MaxEvents: 1,
		Types: []string{"Keep", "Stop"},
		Handler: untilStop(func(ctx context.Context, tx *sql.Tx, page *pb.ReadPartitionResponse) error {
			for _, e := range page.Events {
				seen = append(seen, fmt.Sprintf("%s/%d", e.Type, e.Invalidation.GetTransactionId()))
			}
			return nil
		})}
	if err := c.Run(ctx); !errors.Is(err, errStop) {
		t.Fatalf("Run: %v; want it ended by the Stop event", err)
	}
	if got, want := strings.Join(seen, " "), fmt.Sprintf("Keep/0 $invalidation/%d", bad.TransactionId); got != want {
		t.Fatalf("handled %q, want %q", got, want)
	}
	if len(c.Types) != 2 {
		t.Fatalf("Run changed Types to %v", c.Types)
	}
}
