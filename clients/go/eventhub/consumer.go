package eventhub

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	pb "github.com/eventhub/eventhub/clients/go/eventhubv1"
)

// Handler applies one page of events inside tx. Return an error to roll
// tx back and stop the Consumer; the page is read again on the next run.
// A Consumer calls its Handler from one goroutine per partition. With
// SQLite, let the *sql.DB hold one connection (SetMaxOpenConns(1)) or begin
// transactions IMMEDIATE, so that they do not fail with SQLITE_BUSY.
type Handler func(ctx context.Context, tx *sql.Tx, page *pb.ReadPartitionResponse) error

// Consumer reads the partitions of a topic and applies each page of events
// exactly once: the Handler's effects and the partition's new cursor are
// committed in the same transaction, in the table eventhub_cursors (see
// CreateCursorTable).
type Consumer struct {
	Client  *Client
	DB      *sql.DB
	Dialect Dialect
	// Name identifies the consumer's cursors; consumers with different
	// names read independently.
	Name  string
	Topic string
	// Partitions to read; empty means all of the topic's partitions.
	Partitions []uint32
	// StartAt is where a partition without a stored cursor begins: First
	// (the default) or Last.
	StartAt string
	// MaxEvents per page (and so per transaction); 0 means 100.
	MaxEvents uint32
	// Types, when not empty, keeps only events of these types.
	Types   []string
	Handler Handler
}

// Run consumes until ctx is done, then returns nil, or until a read, the
// Handler or the database fails, then stops every partition and returns
// that error. A transaction cut short by ctx is rolled back.
func (c *Consumer) Run(ctx context.Context) error {
	if c.Client == nil || c.DB == nil || c.Handler == nil || c.Name == "" || c.Topic == "" {
		return errors.New("eventhub: Consumer needs Client, DB, Handler, Name and Topic")
	}
	start := c.StartAt
	if start == "" {
		start = First
	}
	topic, err := c.Client.GetTopic(ctx, c.Topic)
	if err != nil {
		return err
	}
	partitions := c.Partitions
	if len(partitions) == 0 {
		for p := range topic.PartitionCount {
			partitions = append(partitions, p)
		}
	}
	cursors, err := loadCursors(ctx, c.DB, c.Dialect, c.Name, c.Topic)
	if err != nil {
		return fmt.Errorf("eventhub: loading cursors: %w", err)
	}
	for _, p := range partitions {
		if p >= topic.PartitionCount {
			return fmt.Errorf("eventhub: topic %q has no partition %d", c.Topic, p)
		}
		if _, ok := cursors[p]; ok || start != Last {
			continue
		}
		// Pin "now" at once, so that a restart does not skip what
		// commits before the first page.
		head := First
		for _, info := range topic.Partitions {
			if info.Partition == p && info.HeadCursor != "" {
				head = info.HeadCursor
			}
		}
		if err := storeCursor(ctx, c.DB, c.Dialect, c.Name, c.Topic, p, head); err != nil {
			return fmt.Errorf("eventhub: storing cursors: %w", err)
		}
		cursors[p] = head
	}

	parent := ctx
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for _, p := range partitions {
		cursor, ok := cursors[p]
		if !ok {
			cursor = start
		}
		wg.Go(func() {
			if err := c.consume(ctx, p, cursor); err != nil {
				cancel(fmt.Errorf("eventhub: consumer %q, topic %q, partition %d: %w", c.Name, c.Topic, p, err))
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != context.Cause(parent) {
		return err
	}
	return nil
}

// consume follows one partition from cursor until ctx is done or an error.
func (c *Consumer) consume(ctx context.Context, partition uint32, cursor string) error {
	opts := ReadOptions{MaxEvents: c.MaxEvents, Follow: true, Types: c.Types}
	for ended := 1; ; ended++ {
		for page, err := range c.Client.ReadPartition(ctx, c.Topic, partition, cursor, opts) {
			if err != nil {
				return err
			}
			ended = 1
			if len(page.Events) == 0 && page.Cursor == cursor {
				continue // a heartbeat
			}
			if err := c.apply(ctx, partition, page); err != nil {
				return err
			}
			cursor = page.Cursor
		}
		// The hub ended the stream (it is shutting down): follow again.
		if err := c.Client.Retry.withDefaults().backoff(ctx, ended); err != nil {
			return nil
		}
	}
}

// apply runs the Handler on page and stores the page's cursor, in one
// transaction.
func (c *Consumer) apply(ctx context.Context, partition uint32, page *pb.ReadPartitionResponse) error {
	tx, err := c.DB.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if len(page.Events) > 0 {
		if err := c.Handler(ctx, tx, page); err != nil {
			return err
		}
	}
	if err := storeCursor(ctx, tx, c.Dialect, c.Name, c.Topic, partition, page.Cursor); err != nil {
		return fmt.Errorf("storing the cursor: %w", err)
	}
	return tx.Commit()
}
