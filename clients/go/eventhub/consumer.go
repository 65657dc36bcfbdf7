package eventhub

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

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
//
// Storing a cursor checks that the stored one is still the one the page was
// read from (a partition without a stored cursor inserts it). If another
// consumer with the same Name got there first, the transaction is rolled
// back and Run returns a *CursorConflictError: two consumers with one Name
// (replicas, or the old and the new instance during a rolling deploy) never
// both apply a page, but they do not share the work either; split the
// partitions between them with Partitions, or give them different Names.
//
// # Invalidated transactions
//
// Invalidate does not remove events: it appends a marker event (Type
// InvalidationType, with Invalidation.TransactionId naming the invalid
// transaction) to every partition holding events of that transaction, after
// them. Event.TransactionInvalidated only says whether the transaction had
// been invalidated when the page was read, so the same event arrives
// unflagged before an Invalidate and flagged when read again after it.
// For effects that do not depend on that timing, a Handler should follow
// one rule: apply every event as it comes, whatever its
// TransactionInvalidated, and undo the effects of transaction
// Invalidation.TransactionId when its marker arrives (in that partition).
// When Types is not empty, the Consumer adds InvalidationType to it, so
// that markers still arrive; a Handler that does not care skips them.
type Consumer struct {
	Client  *Client
	DB      *sql.DB
	Dialect Dialect
	// Name identifies the consumer's cursors; consumers with different
	// names read independently.
	Name  string
	Topic string
	// Partitions to read; empty means all of the topic's partitions.
	// A partition listed twice is read once.
	Partitions []uint32
	// StartAt is where a partition without a stored cursor begins: First
	// (the default) or Last, the head when Run starts (stored at once, so
	// that a restart does not skip what arrives meanwhile).
	StartAt string
	// MaxEvents per page (and so per transaction); 0 means 100.
	MaxEvents uint32
	// Types, when not empty, keeps only events of these types, and
	// invalidation markers (InvalidationType is added when missing).
	Types []string
	// Heartbeat is the longest gap between two pages the hub is asked for
	// (0 means 5s). A partition's stream that brings nothing for three
	// of them is taken for dead and reopened.
	Heartbeat time.Duration
	// Retry says how Run retries when the hub answers UNAVAILABLE or a
	// partition's stream breaks or stalls. The zero value retries without
	// limit, waiting 100ms doubling up to 5s in between, with jitter, so
	// that a consumer rides through restarts and outages of the hub. Set
	// Attempts to give up after that many failures in a row: Run then
	// returns the last one.
	Retry RetryPolicy
	// Logger receives a warning for each failure that is retried, with the
	// consumer, topic, partition, attempt and delay; nil means
	// slog.Default().
	Logger  *slog.Logger
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
	if start != First && start != Last {
		return fmt.Errorf("eventhub: Consumer.StartAt is %q, want First or Last", start)
	}
	policy := c.Retry.withDefaults(consumerAttempts)
	var resp *pb.GetTopicResponse
	err := retryCall(ctx, policy, c.report(-1), func() (err error) {
		resp, err = c.Client.api.GetTopic(ctx, &pb.GetTopicRequest{Name: c.Topic})
		return err
	})
	if err != nil {
		return err
	}
	topic := resp.GetTopic()
	partitions := slices.Clone(c.Partitions)
	if len(partitions) == 0 {
		for p := range topic.PartitionCount {
			partitions = append(partitions, p)
		}
	}
	slices.Sort(partitions)
	partitions = slices.Compact(partitions)
	// previous holds the stored cursor of each partition: what storing
	// the next one expects to replace.
	previous, err := loadCursors(ctx, c.DB, c.Dialect, c.Name, c.Topic)
	if err != nil {
		return fmt.Errorf("eventhub: loading cursors: %w", err)
	}
	for _, p := range partitions {
		if p >= topic.PartitionCount {
			return fmt.Errorf("eventhub: topic %q has no partition %d", c.Topic, p)
		}
		if _, ok := previous[p]; ok || start != Last {
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
		if err := storeCursor(ctx, c.DB, c.Dialect, c.Name, c.Topic, p, "", head); err != nil {
			return fmt.Errorf("eventhub: storing the start cursor: %w", err)
		}
		previous[p] = head
	}

	parent := ctx
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for _, p := range partitions {
		wg.Go(func() {
			if err := c.consume(ctx, p, previous[p], policy); err != nil {
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

// consume follows one partition from its stored cursor (empty when none is
// stored) until ctx is done or an error.
func (c *Consumer) consume(ctx context.Context, partition uint32, stored string, policy RetryPolicy) error {
	types := c.Types
	if len(types) > 0 && !slices.Contains(types, InvalidationType) {
		types = append(slices.Clip(types), InvalidationType)
	}
	opts := ReadOptions{MaxEvents: c.MaxEvents, Follow: true, Heartbeat: c.Heartbeat, Types: types}
	cursor := stored
	if cursor == "" {
		cursor = First
	}
	for page, err := range c.Client.readPartition(ctx, c.Topic, partition, cursor, opts, policy, c.report(int64(partition))) {
		if err != nil {
			return err
		}
		if len(page.Events) == 0 && page.Cursor == cursor {
			continue // a heartbeat
		}
		if err := c.apply(ctx, partition, stored, page); err != nil {
			return err
		}
		cursor, stored = page.Cursor, page.Cursor
	}
	return nil // a follow read ends only with an error; this is for safety
}

// apply runs the Handler on page and replaces the stored cursor previous
// (empty: none) by the page's, in one transaction.
func (c *Consumer) apply(ctx context.Context, partition uint32, previous string, page *pb.ReadPartitionResponse) error {
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
	if err := storeCursor(ctx, tx, c.Dialect, c.Name, c.Topic, partition, previous, page.Cursor); err != nil {
		return err
	}
	return tx.Commit()
}

// report returns what logs a retried failure of partition (-1: of the
// call describing the topic).
func (c *Consumer) report(partition int64) retryReport {
	return func(err error, failures int, delay time.Duration) {
		logger := c.Logger
		if logger == nil {
			logger = slog.Default()
		}
		attrs := []any{"consumer", c.Name, "topic", c.Topic}
		if partition >= 0 {
			attrs = append(attrs, "partition", partition)
		}
		attrs = append(attrs, "attempt", failures, "retry_in", delay, "error", err)
		logger.Warn("eventhub: reading failed; retrying", attrs...)
	}
}
