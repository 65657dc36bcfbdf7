package eventhub_test

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"testing"

	"github.com/eventhub/eventhub/clients/go/eventhub"
	pb "github.com/eventhub/eventhub/clients/go/eventhubv1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// PartitionFor implements the FNV-1a hash of the proto's examples.
func TestPartitionFor(t *testing.T) {
	for _, c := range []struct {
		key  string
		n    uint32
		want uint32
	}{
		{"", 1000, uint32(0xcbf29ce484222325 % 1000)},
		{"a", 1000, uint32(0xaf63dc4c8601ec8c % 1000)},
		{"a", 1024, uint32(0xaf63dc4c8601ec8c % 1024)},
		{"anything", 1, 0},
	} {
		if got := eventhub.PartitionFor(c.key, c.n); got != c.want {
			t.Errorf("PartitionFor(%q, %d) = %d, want %d", c.key, c.n, got, c.want)
		}
	}
}

// Appended events come back from every partition intact, in order, at the
// positions Append reported, and the topic's description agrees.
func TestRoundTrip(t *testing.T) {
	ctx := testCtx(t)
	topic := newTopic(t, 4)
	var events []*pb.AppendEvent
	for i := range 24 {
		e := ev(fmt.Sprintf("order-%d", i%6), []string{"OrderPlaced", "OrderShipped"}[i%2], fmt.Sprintf(`{"n":%d}`, i))
		e.ContentType = "application/json"
		e.Headers = map[string]string{"trace-id": fmt.Sprintf("t-%d", i)}
		e.EventId = fmt.Sprintf("ev-%d", i)
		events = append(events, e)
	}
	resp := mustAppend(t, topic, events...)

	versions := map[string]uint64{}
	nextSeq := map[uint32]uint64{}
	for i, r := range resp.Results {
		key := events[i].Key
		versions[key]++
		nextSeq[r.Partition]++
		if r.Partition != eventhub.PartitionFor(key, 4) || r.Sequence != nextSeq[r.Partition] ||
			r.KeyVersion != versions[key] || r.TransactionId != resp.TransactionId ||
			r.Outcome != pb.AppendOutcome_APPEND_OUTCOME_STORED || r.Deduplicated || r.Cursor == "" {
			t.Errorf("result %d (key %s) = %v; want partition %d, sequence %d, version %d, tx %d, stored",
				i, key, r, eventhub.PartitionFor(key, 4), nextSeq[r.Partition], versions[key], resp.TransactionId)
		}
	}

	heads := map[uint32]string{}
	read := 0
	for p := range uint32(4) {
		got, cursor := readAll(t, topic, p, eventhub.First, eventhub.ReadOptions{MaxEvents: 2})
		heads[p] = cursor
		var want []int
		for i, r := range resp.Results {
			if r.Partition == p {
				want = append(want, i)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("partition %d: read %d events, want %d", p, len(got), len(want))
		}
		for j, e := range got {
			i := want[j]
			a, r := events[i], resp.Results[i]
			if e.Partition != p || e.Sequence != r.Sequence || e.Cursor != r.Cursor ||
				e.TransactionId != r.TransactionId || e.Key != a.Key || e.KeyVersion != r.KeyVersion ||
				e.EventId != a.EventId || e.Type != a.Type || e.ContentType != a.ContentType ||
				!maps.Equal(e.Headers, a.Headers) || !bytes.Equal(e.Payload, a.Payload) ||
				e.Tombstone || e.TransactionInvalidated || e.CommittedAt == nil {
				t.Errorf("partition %d event %d = %v\nappended %v with result %v", p, j, e, a, r)
			}
		}
		if len(got) > 0 && cursor != got[len(got)-1].Cursor {
			t.Errorf("partition %d: last page cursor %q, want the last event's %q", p, cursor, got[len(got)-1].Cursor)
		}
		read += len(got)

		// Reading from an event's cursor continues right after it.
		if len(got) > 1 {
			rest, _ := readAll(t, topic, p, got[0].Cursor, eventhub.ReadOptions{})
			if len(rest) != len(got)-1 || rest[0].Sequence != 2 {
				t.Errorf("partition %d from the first event's cursor: %d events starting at %v", p, len(rest), rest[0])
			}
		}
	}
	if read != len(events) {
		t.Fatalf("read %d events, want %d", read, len(events))
	}

	info, err := client.GetTopic(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != topic || info.PartitionCount != 4 || info.EventCount != 24 ||
		info.LastTransactionId != resp.TransactionId || info.CreatedAt == nil || len(info.Partitions) != 4 {
		t.Fatalf("GetTopic = %v", info)
	}
	for i, part := range info.Partitions {
		if part.Partition != uint32(i) || part.EventCount != nextSeq[part.Partition] || part.HeadCursor != heads[part.Partition] {
			t.Errorf("partition info %v; want %d events, head %q", part, nextSeq[part.Partition], heads[part.Partition])
		}
	}

	var listed []string
	for topic, err := range client.ListTopics(ctx, topic) {
		if err != nil {
			t.Fatal(err)
		}
		listed = append(listed, topic.Name)
	}
	if len(listed) != 1 || listed[0] != topic {
		t.Errorf("ListTopics(%q) = %v", topic, listed)
	}
}

// Appending to an unknown topic creates it with the hub's default
// partition count; the hub serves gRPC health.
func TestAutoCreateAndHealth(t *testing.T) {
	ctx := testCtx(t)
	name := fmt.Sprintf("auto-created-%d", topicSeq.Add(1))
	r := mustAppend(t, name, ev("k", "T", "x")).Results[0]
	info, err := client.GetTopic(ctx, name)
	if err != nil || info.PartitionCount != 3 || r.Partition != eventhub.PartitionFor("k", 3) {
		t.Fatalf("auto-created topic: %v, %v; want 3 partitions (--default-partitions 3)", info, err)
	}
	conn, err := grpc.NewClient(hub.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, service := range []string{"", "eventhub.v1.EventHubService"} {
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %q: %v, %v", service, resp, err)
		}
	}
}

// ListTopics pages through every topic, sorted by name.
func TestListTopicsPages(t *testing.T) {
	var names []string
	for range 3 {
		names = append(names, newTopic(t, 1))
	}
	var all []string
	for topic, err := range client.ListTopics(testCtx(t), "") {
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, topic.Name)
	}
	for i := 1; i < len(all); i++ {
		if all[i-1] >= all[i] {
			t.Fatalf("ListTopics not sorted: %q before %q", all[i-1], all[i])
		}
	}
	for _, n := range names {
		found := false
		for _, a := range all {
			found = found || a == n
		}
		if !found {
			t.Errorf("ListTopics misses %q", n)
		}
	}
}

// An event id is stored once, forever; dedup by content skips an event
// equal to its key's latest one only.
func TestDeduplication(t *testing.T) {
	topic := newTopic(t, 2)
	first := ev("k", "Set", "A")
	first.EventId = "id-1"
	r1 := mustAppend(t, topic, first)
	again := ev("k", "Set", "B")
	again.EventId = "id-1"
	r2 := mustAppend(t, topic, again)
	a, b := r1.Results[0], r2.Results[0]
	if b.Outcome != pb.AppendOutcome_APPEND_OUTCOME_DUPLICATE_EVENT_ID || !b.Deduplicated ||
		b.Partition != a.Partition || b.Sequence != a.Sequence || b.Cursor != a.Cursor ||
		b.KeyVersion != a.KeyVersion || b.TransactionId != a.TransactionId || r2.TransactionId != r1.TransactionId {
		t.Fatalf("retried event id: %v (tx %d), first %v (tx %d)", b, r2.TransactionId, a, r1.TransactionId)
	}

	dedup := func(e *pb.AppendEvent) *pb.AppendResult {
		resp, err := client.Append(testCtx(t), topic, []*pb.AppendEvent{e}, eventhub.DedupByContent())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Results[0]
	}
	if r := dedup(ev("k", "Set", "A")); r.Outcome != pb.AppendOutcome_APPEND_OUTCOME_DUPLICATE_CONTENT || r.Sequence != a.Sequence {
		t.Fatalf("same content: %v, want a duplicate of %v", r, a)
	}
	if r := dedup(ev("k", "Set", "B")); r.Outcome != pb.AppendOutcome_APPEND_OUTCOME_STORED || r.KeyVersion != 2 {
		t.Fatalf("new content: %v", r)
	}
	if r := dedup(ev("k", "Set", "A")); r.Outcome != pb.AppendOutcome_APPEND_OUTCOME_STORED || r.KeyVersion != 3 {
		t.Fatalf("A, B, A: %v, want the third stored", r)
	}
	if r := mustAppend(t, topic, ev("k", "Set", "A")).Results[0]; r.Outcome != pb.AppendOutcome_APPEND_OUTCOME_STORED || r.KeyVersion != 4 {
		t.Fatalf("same content without dedup: %v", r)
	}
	got, _ := readAll(t, topic, eventhub.PartitionFor("k", 2), eventhub.First, eventhub.ReadOptions{})
	if keysOf(got) != "k@1 k@2 k@3 k@4" {
		t.Fatalf("stored %s, want k@1 k@2 k@3 k@4", keysOf(got))
	}
}

// ReadKey loads a key's history; expected versions guard appends.
func TestReadKeyAndExpectedVersion(t *testing.T) {
	ctx := testCtx(t)
	topic := newTopic(t, 3)
	history := func(from uint64) (string, uint64) {
		var events []*pb.Event
		var current uint64
		pages := 0
		for page, err := range client.ReadKey(ctx, topic, "acc-1", from) {
			if err != nil {
				t.Fatal(err)
			}
			events = append(events, page.Events...)
			current = page.CurrentVersion
			pages++
		}
		if pages == 0 {
			t.Fatal("ReadKey sent no page")
		}
		return keysOf(events), current
	}
	if got, v := history(0); got != "" || v != 0 {
		t.Fatalf("unknown key: %q, version %d", got, v)
	}

	expect := func(e *pb.AppendEvent, kind pb.ExpectedVersion, v uint64) *pb.AppendEvent {
		e.Expected, e.ExpectedKeyVersion = kind, v
		return e
	}
	mustAppend(t, topic, expect(ev("acc-1", "Opened", "1"), pb.ExpectedVersion_EXPECTED_VERSION_NO_KEY, 0))
	mustAppend(t, topic, expect(ev("acc-1", "Deposited", "2"), pb.ExpectedVersion_EXPECTED_VERSION_EXACT, 1))
	mustAppend(t, topic, expect(ev("acc-1", "Deposited", "3"), pb.ExpectedVersion_EXPECTED_VERSION_EXISTS, 0))

	for _, c := range []struct {
		key    string
		kind   pb.ExpectedVersion
		v      uint64
		actual uint64
	}{
		{"acc-1", pb.ExpectedVersion_EXPECTED_VERSION_NO_KEY, 0, 3},
		{"acc-1", pb.ExpectedVersion_EXPECTED_VERSION_EXACT, 2, 3},
		{"acc-1", pb.ExpectedVersion_EXPECTED_VERSION_EXACT, 0, 3},
		{"acc-2", pb.ExpectedVersion_EXPECTED_VERSION_EXISTS, 0, 0},
		{"acc-2", pb.ExpectedVersion_EXPECTED_VERSION_EXACT, 1, 0},
		{"ключ 1", pb.ExpectedVersion_EXPECTED_VERSION_EXISTS, 0, 0},
	} {
		// The conflicting event comes second: the first must not be stored.
		_, err := client.Append(ctx, topic, []*pb.AppendEvent{ev("acc-3", "Opened", "x"), expect(ev(c.key, "Deposited", "x"), c.kind, c.v)})
		var conflict *eventhub.VersionConflictError
		if !errors.As(err, &conflict) || conflict.Key != c.key || conflict.ActualVersion != c.actual {
			t.Errorf("%s expecting %v %d: %v; want a conflict at version %d", c.key, c.kind, c.v, err, c.actual)
			continue
		}
		if !errors.Is(err, eventhub.ErrFailedPrecondition) || status.Code(err) != codes.FailedPrecondition {
			t.Errorf("conflict error %v does not match FAILED_PRECONDITION", err)
		}
	}
	for page, err := range client.ReadKey(ctx, topic, "acc-3", 0) {
		if err != nil || len(page.Events) != 0 || page.CurrentVersion != 0 {
			t.Fatalf("a refused Append stored something: %v, %v", page, err)
		}
	}

	if got, v := history(0); got != "acc-1@1 acc-1@2 acc-1@3" || v != 3 {
		t.Fatalf("history: %q, version %d", got, v)
	}
	if got, v := history(2); got != "acc-1@2 acc-1@3" || v != 3 {
		t.Fatalf("history from 2: %q, version %d", got, v)
	}
}
