package eventhub_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"path/filepath"
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
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "app.db")+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	ctx := testCtx(t)
	if err := eventhub.CreateCursorTable(ctx, db, eventhub.SQLite); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE applied (partition INTEGER, sequence INTEGER, key TEXT)`); err != nil {
		t.Fatal(err)
	}
	return db
}

// record is a Handler inserting every event into the table applied.
func record(ctx context.Context, tx *sql.Tx, page *pb.ReadPartitionResponse) error {
	for _, e := range page.Events {
		if _, err := tx.ExecContext(ctx, `INSERT INTO applied VALUES (?, ?, ?)`, e.Partition, e.Sequence, e.Key); err != nil {
			return err
		}
	}
	return nil
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

// A consumer rides through a restart of its hub (reads are retried while
// it is away) and applies every event once.
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
	c.Retry = eventhub.RetryPolicy{Attempts: 200, Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}
	if _, _, err := c.CreateTopic(testCtx(t), "restart", 3); err != nil {
		t.Fatal(err)
	}

	db := openDB(t)
	stop := start(t, &eventhub.Consumer{Client: c, DB: db, Name: "test", Topic: "restart", Handler: record})
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
