package eventhub_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/eventhub/eventhub/clients/go/eventhub"
	pb "github.com/eventhub/eventhub/clients/go/eventhubv1"
	"github.com/eventhub/eventhub/clients/go/internal/testhub"
	"google.golang.org/grpc/codes"
)

// ownHub starts a hub for one test that pauses or stops it, with a topic
// of one partition, and returns a client of it.
func ownHub(t *testing.T, topic string) (*testhub.Hub, *eventhub.Client) {
	t.Helper()
	h := startHub(t, t.TempDir())
	c, err := eventhub.Dial(h.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, _, err := c.CreateTopic(testCtx(t), topic, 1); err != nil {
		t.Fatal(err)
	}
	return h, c
}

// A follow read whose hub stops answering without closing the connection
// (SIGSTOP) notices when three heartbeat intervals pass without a page:
// the call is cancelled and reopened, and once the Client's retries are
// spent the read fails UNAVAILABLE instead of blocking forever.
func TestFollowDetectsSilentHub(t *testing.T) {
	h, c := ownHub(t, "silent")
	c.Retry = eventhub.RetryPolicy{Attempts: 2, Initial: 10 * time.Millisecond, Max: 10 * time.Millisecond}
	var err error
	var paused time.Time
	pages := 0
	for page, e := range c.ReadPartition(testCtx(t), "silent", 0, eventhub.First,
		eventhub.ReadOptions{Follow: true, Heartbeat: 100 * time.Millisecond}) {
		if e != nil {
			err = e
			break
		}
		if len(page.Events) != 0 {
			t.Fatalf("page of an empty partition: %v", page)
		}
		if pages++; pages == 1 {
			if err := h.Pause(); err != nil {
				t.Fatal(err)
			}
			paused = time.Now()
		}
	}
	elapsed := time.Since(paused)
	if err := h.Resume(); err != nil {
		t.Fatal(err)
	}
	checkErr(t, "a follow read of a paused hub", err, eventhub.ErrUnavailable, codes.Unavailable)
	if !strings.Contains(err.Error(), "three heartbeat intervals") {
		t.Fatalf("error %v does not say that the stream stalled", err)
	}
	// Two tries of at least 3 × 100ms each, and one wait of 5 to 10ms.
	if elapsed < 600*time.Millisecond || elapsed > 10*time.Second {
		t.Fatalf("failed %v after the hub was paused; want two stalls of 300ms and a 10ms backoff", elapsed)
	}
}

// A consumer whose hub falls silent (SIGSTOP) reports the stalled stream
// to its Logger within a few heartbeat intervals and keeps retrying; once
// the hub answers again (SIGCONT) it applies what was appended, each event
// once.
func TestConsumerRidesThroughSilentHub(t *testing.T) {
	h, c := ownHub(t, "silent")
	ctx := testCtx(t)
	db := openDB(t)
	logs := make(logLines, 1000)
	applying := make(chan struct{}, 1)
	consumer := &eventhub.Consumer{Client: c, DB: db, Name: "test", Topic: "silent", MaxEvents: 1,
		Heartbeat: 200 * time.Millisecond, Logger: logs.logger(),
		Handler: untilStop(func(ctx context.Context, tx *sql.Tx, page *pb.ReadPartitionResponse) error {
			select {
			case applying <- struct{}{}:
			default:
			}
			return record(ctx, tx, page)
		})}
	done := make(chan error, 1)
	go func() { done <- consumer.Run(ctx) }()
	appendN(t, c, "silent", 0, 1)
	select {
	case <-applying: // the consumer follows the partition
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}

	logs.drain()
	if err := h.Pause(); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	line := logs.await(t, "three heartbeat intervals", 10*time.Second)
	elapsed := time.Since(paused)
	if err := h.Resume(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(line, "level=WARN") || !strings.Contains(line, "partition=0") || !strings.Contains(line, "consumer=test") {
		t.Fatalf("report of the stall: %q; want a warning naming the consumer and the partition", line)
	}
	if elapsed < 600*time.Millisecond {
		t.Fatalf("stall reported %v after the hub was paused, before three heartbeat intervals of 200ms", elapsed)
	}

	appendN(t, c, "silent", 1, 9)
	if _, err := c.Append(ctx, "silent", []*pb.AppendEvent{ev("k", "Stop", "")}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, errStop) {
			t.Fatalf("Run: %v; want it ended by the Stop event", err)
		}
	case <-ctx.Done():
		t.Fatalf("the consumer did not reach the Stop event: %v", ctx.Err())
	}
	if rows, distinct := count(t, db); rows != 10 || distinct != 10 {
		t.Fatalf("applied %d rows for %d distinct events, want 10 each", rows, distinct)
	}
}

// startHub starts a hub of the test's own on a free port, with its database
// in dir and the extra serve flags given, stopped when the test ends (its log
// shown if the test failed).
func startHub(t *testing.T, dir string, extra ...string) *testhub.Hub {
	t.Helper()
	h, err := testhub.Start(dir, "127.0.0.1:0", extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("hub log:\n%s", h.Tail())
		}
		if err := h.Stop(); err != nil {
			t.Errorf("stopping the hub: %v", err)
		}
	})
	return h
}
