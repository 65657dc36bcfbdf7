// Command projector keeps a SQLite table with the latest event of every key
// of a topic. Each page of events is applied in the same transaction that
// stores the partition's cursor, so a crash at any moment neither loses nor
// repeats an event: the column `events` counts every event exactly once.
//
// From clients/go, with a hub running and the topic created:
//
//	go run ./examples/projector -hub 127.0.0.1:50051 -topic orders -db projection.db
//
// It runs until interrupted (SIGINT or SIGTERM) and resumes where it
// stopped.
package main

import (
	"context"
	"database/sql"
	"flag"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/eventhub/eventhub/clients/go/eventhub"
	pb "github.com/eventhub/eventhub/clients/go/eventhubv1"
	_ "modernc.org/sqlite"
)

const schema = `
CREATE TABLE IF NOT EXISTS projection (
    key     TEXT PRIMARY KEY,
    events  INTEGER NOT NULL, -- events of the key applied so far
    version INTEGER NOT NULL, -- key version of the latest one
    type    TEXT    NOT NULL,
    payload BLOB
)`

const upsert = `
INSERT INTO projection (key, events, version, type, payload) VALUES (?, 1, ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET
    events = events + 1, version = excluded.version, type = excluded.type, payload = excluded.payload`

func main() {
	hub := flag.String("hub", "127.0.0.1:50051", "the eventhub's address")
	topic := flag.String("topic", "orders", "the topic to project")
	path := flag.String("db", "projection.db", "the SQLite database file")
	name := flag.String("consumer", "projector", "the consumer name its cursors are stored under")
	page := flag.Uint("page", 100, "most events per page, and so per transaction")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *hub, *topic, *path, *name, uint32(*page)); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, hub, topic, path, name string, page uint32) error {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)")
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1) // one writer at a time: SQLite's own rule
	if err := eventhub.CreateCursorTable(ctx, db, eventhub.SQLite); err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, schema); err != nil {
		return err
	}

	client, err := eventhub.Dial(hub)
	if err != nil {
		return err
	}
	defer client.Close()
	consumer := &eventhub.Consumer{
		Client:    client,
		DB:        db,
		Dialect:   eventhub.SQLite,
		Name:      name,
		Topic:     topic,
		MaxEvents: page,
		Handler:   project,
	}
	log.Printf("projecting topic %s from %s into %s", topic, hub, path)
	return consumer.Run(ctx)
}

// project applies one page of events to the table projection.
func project(ctx context.Context, tx *sql.Tx, page *pb.ReadPartitionResponse) error {
	for _, e := range page.Events {
		var err error
		switch {
		case e.Invalidation != nil:
			// This projection counts every event, valid or not, so
			// that its result does not depend on when it reads (see
			// "Invalidated transactions" in the README). One that must
			// drop invalid effects would undo here what transaction
			// e.Invalidation.TransactionId applied.
			continue
		case e.Tombstone:
			_, err = tx.ExecContext(ctx, `DELETE FROM projection WHERE key = ?`, e.Key)
		default:
			_, err = tx.ExecContext(ctx, upsert, e.Key, e.KeyVersion, e.Type, e.Payload)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
