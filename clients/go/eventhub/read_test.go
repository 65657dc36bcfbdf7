package eventhub_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/eventhub/eventhub/clients/go/eventhub"
	pb "github.com/eventhub/eventhub/clients/go/eventhubv1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A read with nothing past its cursor waits up to wait_ms, then sends one
// empty page with the cursor unchanged.
func TestLongPollTimesOut(t *testing.T) {
	topic := newTopic(t, 1)
	head := mustAppend(t, topic, ev("k", "T", "1")).Results[0].Cursor
	start := time.Now()
	var pages []*pb.ReadPartitionResponse
	for page, err := range client.ReadPartition(testCtx(t), topic, 0, head, eventhub.ReadOptions{Wait: 300 * time.Millisecond}) {
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, page)
	}
	if elapsed := time.Since(start); elapsed < 250*time.Millisecond {
		t.Errorf("answered after %v, want a wait of 300ms", elapsed)
	}
	if len(pages) != 1 || len(pages[0].Events) != 0 || pages[0].Cursor != head || !pages[0].CaughtUp {
		t.Fatalf("pages %v; want one empty caught-up page at %q", pages, head)
	}
}

// A waiting read wakes up when an event commits and sends it.
func TestLongPollWakesUp(t *testing.T) {
	ctx := testCtx(t)
	topic := newTopic(t, 1)
	head := mustAppend(t, topic, ev("k", "T", "1")).Results[0].Cursor
	stream, err := client.API().ReadPartition(ctx, &pb.ReadPartitionRequest{Topic: topic, Cursor: head, WaitMs: 30_000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Header(); err != nil { // the hub has taken the call
		t.Fatal(err)
	}
	start := time.Now()
	appended := mustAppend(t, topic, ev("k", "T", "2")).Results[0]
	page, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(start); elapsed > 10*time.Second {
		t.Errorf("woke up after %v", elapsed)
	}
	if len(page.Events) != 1 || page.Events[0].Sequence != 2 || page.Cursor != appended.Cursor || !page.CaughtUp {
		t.Fatalf("page %v; want event 2, cursor %q", page, appended.Cursor)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the page: %v, want the end of the stream", err)
	}
}

// A follow stream sends heartbeats while idle, pushes events as they
// commit, and ends with Canceled when the caller cancels.
func TestFollow(t *testing.T) {
	topic := newTopic(t, 1)
	ctx, cancel := context.WithCancel(testCtx(t))
	pages := make(chan *pb.ReadPartitionResponse, 100)
	done := make(chan error, 1)
	go func() {
		defer close(pages)
		for page, err := range client.ReadPartition(ctx, topic, 0, eventhub.First, eventhub.ReadOptions{Follow: true, Heartbeat: 100 * time.Millisecond}) {
			if err != nil {
				done <- err
				return
			}
			pages <- page
		}
		done <- nil
	}()
	next := func() *pb.ReadPartitionResponse {
		t.Helper()
		select {
		case p, ok := <-pages:
			if !ok {
				t.Fatalf("follow stream ended: %v", <-done)
			}
			return p
		case <-time.After(10 * time.Second):
			t.Fatal("no page for 10s on a follow stream with 100ms heartbeats")
			return nil
		}
	}
	if p := next(); len(p.Events) != 0 || !p.CaughtUp {
		t.Fatalf("first page on an empty partition: %v, want a heartbeat", p)
	}

	var got []*pb.Event
	var cursor string
	for i := range 3 {
		r := mustAppend(t, topic, ev("k", "T", fmt.Sprint(i))).Results[0]
		for cursor != r.Cursor {
			p := next()
			got = append(got, p.Events...)
			cursor = p.Cursor
			if len(got) > i+1 {
				t.Fatalf("more events than appended: %s", keysOf(got))
			}
		}
	}
	if keysOf(got) != "k@1 k@2 k@3" {
		t.Fatalf("followed %s, want k@1 k@2 k@3", keysOf(got))
	}
	if p := next(); len(p.Events) != 0 || p.Cursor != cursor {
		t.Fatalf("heartbeat after the events: %v, want an empty page at %q", p, cursor)
	}

	cancel()
	for range pages {
	}
	if err := <-done; !errors.Is(err, context.Canceled) || status.Code(err) != codes.Canceled {
		t.Fatalf("after cancel: %v, want Canceled", err)
	}
}

// A types filter skips other events but still moves the cursor past them.
func TestTypesFilter(t *testing.T) {
	topic := newTopic(t, 1)
	resp := mustAppend(t, topic, ev("a", "Keep", "1"), ev("b", "Skip", "2"), ev("c", "Keep", "3"), ev("d", "Skip", "4"))
	got, cursor := readAll(t, topic, 0, eventhub.First, eventhub.ReadOptions{Types: []string{"Keep"}})
	if keysOf(got) != "a@1 c@1" {
		t.Fatalf("filtered read: %s, want a@1 c@1", keysOf(got))
	}
	if head := resp.Results[3].Cursor; cursor != head {
		t.Fatalf("filtered read ended at %q, want past the skipped events at %q", cursor, head)
	}
}

// Surface lists the latest valid event of each key; reading the partitions
// from its cursors continues with no gap and no overlap.
func TestSurfaceAndContinue(t *testing.T) {
	topic := newTopic(t, 3)
	tomb := ev("k2", "Deleted", "")
	tomb.Tombstone = true
	first := mustAppend(t, topic, ev("k1", "Created", "1"), ev("k2", "Created", "1"), ev("k3", "Created", "1"))
	mustAppend(t, topic, ev("k1", "Updated", "2"))
	mustAppend(t, topic, tomb)
	bad := mustAppend(t, topic, ev("k3", "Updated", "2"))
	inv, err := client.Invalidate(testCtx(t), topic, bad.TransactionId, "wrong amount")
	if err != nil {
		t.Fatal(err)
	}

	got, page := surface(t, topic, eventhub.SurfaceOptions{})
	if keysOf(got) != "k1@2 k3@1" {
		t.Fatalf("surface: %s, want k1@2 k3@1 (k2 deleted, k3@2 invalidated)", keysOf(got))
	}
	if page.AsOfTransaction != inv.MarkerTransactionId || len(page.Cursors) != 3 {
		t.Fatalf("surface as of %d with cursors %v; want as of %d, 3 cursors", page.AsOfTransaction, page.Cursors, inv.MarkerTransactionId)
	}

	mustAppend(t, topic, ev("k1", "Updated", "3"), ev("k5", "Created", "1"))
	var after []*pb.Event
	for _, c := range page.Cursors {
		events, _ := readAll(t, topic, c.Partition, c.Cursor, eventhub.ReadOptions{})
		after = append(after, events...)
	}
	if len(after) != 2 || keysOf(after) != "k1@3 k5@1" && keysOf(after) != "k5@1 k1@3" {
		t.Fatalf("read from the surface cursors: %s, want exactly k1@3 and k5@1", keysOf(after))
	}

	old, page := surface(t, topic, eventhub.SurfaceOptions{AsOfTransaction: first.TransactionId})
	if keysOf(old) != "k1@1 k2@1 k3@1" || page.AsOfTransaction != first.TransactionId {
		t.Fatalf("surface as of %d: %s (as of %d)", first.TransactionId, keysOf(old), page.AsOfTransaction)
	}
}

// Paging a surface with limit, next_after_key and as_of_transaction gives
// one consistent snapshot while the topic changes.
func TestSurfacePaging(t *testing.T) {
	topic := newTopic(t, 2)
	var events []*pb.AppendEvent
	for i := range 25 {
		events = append(events, ev(fmt.Sprintf("p-%02d", i), "Created", "1"))
	}
	mustAppend(t, topic, events...)
	mustAppend(t, topic, ev("other", "Created", "1"))

	var all []*pb.Event
	opts := eventhub.SurfaceOptions{KeyPrefix: "p-", Limit: 10}
	for calls := 1; ; calls++ {
		got, page := surface(t, topic, opts)
		all = append(all, got...)
		if calls == 1 {
			// Changes after the snapshot must not show in later pages.
			mustAppend(t, topic, ev("p-15", "Updated", "2"), ev("p-99", "Created", "1"), ev("p-00", "Updated", "2"))
		}
		if page.NextAfterKey == "" {
			break
		}
		if calls > 3 || len(got) != 10 || page.NextAfterKey != got[len(got)-1].Key {
			t.Fatalf("call %d: %d keys, next_after_key %q", calls, len(got), page.NextAfterKey)
		}
		opts.AfterKey, opts.AsOfTransaction = page.NextAfterKey, page.AsOfTransaction
	}
	want := ""
	for i := range 25 {
		want += fmt.Sprintf(" p-%02d@1", i)
	}
	if keysOf(all) != want[1:] {
		t.Fatalf("paged surface: %s\nwant %s", keysOf(all), want[1:])
	}
}

// Invalidate appends one marker per partition holding the transaction's
// events; readers see the events flagged and the marker after them.
func TestInvalidate(t *testing.T) {
	ctx := testCtx(t)
	topic := newTopic(t, 2)
	keys := map[uint32]string{}
	for i := 0; len(keys) < 2; i++ {
		k := fmt.Sprintf("key-%d", i)
		keys[eventhub.PartitionFor(k, 2)] = k
	}
	tx := mustAppend(t, topic, ev(keys[0], "T", "x"), ev(keys[1], "T", "y"))
	resp, err := client.Invalidate(ctx, topic, tx.TransactionId, "bad import")
	if err != nil {
		t.Fatal(err)
	}
	if resp.AlreadyInvalidated || len(resp.Markers) != 2 || resp.MarkerTransactionId <= tx.TransactionId {
		t.Fatalf("Invalidate: %v", resp)
	}
	for p := range uint32(2) {
		got, _ := readAll(t, topic, p, eventhub.First, eventhub.ReadOptions{})
		if len(got) != 2 || !got[0].TransactionInvalidated || got[0].Key != keys[p] {
			t.Fatalf("partition %d: %v; want the invalidated event then the marker", p, got)
		}
		m := got[1]
		if m.Type != "$invalidation" || m.Key != "" || m.TransactionId != resp.MarkerTransactionId ||
			m.Invalidation.GetTransactionId() != tx.TransactionId || m.Invalidation.GetReason() != "bad import" {
			t.Fatalf("partition %d marker: %v", p, m)
		}
		only, _ := readAll(t, topic, p, eventhub.First, eventhub.ReadOptions{Types: []string{"T"}})
		if len(only) != 1 {
			t.Fatalf("partition %d filtered on T: %v; markers are sent only when listed", p, only)
		}
	}

	again, err := client.Invalidate(ctx, topic, tx.TransactionId, "again")
	if err != nil {
		t.Fatal(err)
	}
	if !again.AlreadyInvalidated || again.MarkerTransactionId != resp.MarkerTransactionId || len(again.Markers) != 2 {
		t.Fatalf("second Invalidate: %v, first %v", again, resp)
	}
	for page, err := range client.ReadKey(ctx, topic, keys[0], 0) {
		if err != nil || len(page.Events) != 1 || !page.Events[0].TransactionInvalidated {
			t.Fatalf("ReadKey after Invalidate: %v, %v", page, err)
		}
	}
	if _, err := client.Invalidate(ctx, topic, resp.MarkerTransactionId, "undo"); !errors.Is(err, eventhub.ErrInvalidArgument) {
		t.Fatalf("invalidating an invalidation: %v, want INVALID_ARGUMENT", err)
	}
}
