package eventhub_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventhub/eventhub/clients/go/eventhub"
	pb "github.com/eventhub/eventhub/clients/go/eventhubv1"
	"github.com/eventhub/eventhub/clients/go/internal/testhub"
)

var (
	hub    *testhub.Hub
	client *eventhub.Client
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

// run starts one hub for the package's tests; each test uses its own topics.
func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "eventhub-go-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	hub, err = testhub.Start(dir, "127.0.0.1:0", "--default-partitions", "3")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	client, err = eventhub.Dial(hub.Addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	client.Close()
	if err := hub.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping the hub:", err)
		code = 1
	}
	if code != 0 {
		fmt.Fprintf(os.Stderr, "--- end of the hub's log:\n%s\n", hub.Tail())
	}
	return code
}

// testCtx bounds a test's calls.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var topicSeq atomic.Int64

// newTopic creates a fresh topic for t with the given partition count.
func newTopic(t *testing.T, partitions uint32) string {
	t.Helper()
	name := fmt.Sprintf("%s-%d", strings.ReplaceAll(t.Name(), "/", "."), topicSeq.Add(1))
	topic, created, err := client.CreateTopic(testCtx(t), name, partitions)
	if err != nil {
		t.Fatalf("CreateTopic(%q, %d): %v", name, partitions, err)
	}
	if !created || topic.PartitionCount != partitions || topic.Name != name {
		t.Fatalf("CreateTopic(%q, %d) = %v, created %v", name, partitions, topic, created)
	}
	return name
}

// ev builds an event to append.
func ev(key, typ, payload string) *pb.AppendEvent {
	return &pb.AppendEvent{Key: key, Type: typ, ContentType: "text/plain", Payload: []byte(payload)}
}

// mustAppend appends events and fails the test on error.
func mustAppend(t *testing.T, topic string, events ...*pb.AppendEvent) *pb.AppendResponse {
	t.Helper()
	resp, err := client.Append(testCtx(t), topic, events)
	if err != nil {
		t.Fatalf("Append(%q): %v", topic, err)
	}
	if len(resp.Results) != len(events) {
		t.Fatalf("Append(%q): %d results for %d events", topic, len(resp.Results), len(events))
	}
	return resp
}

// readAll reads a partition from cursor until caught up and returns its
// events and the last page's cursor.
func readAll(t *testing.T, topic string, partition uint32, cursor string, opts eventhub.ReadOptions) ([]*pb.Event, string) {
	t.Helper()
	var events []*pb.Event
	pages := 0
	for page, err := range client.ReadPartition(testCtx(t), topic, partition, cursor, opts) {
		if err != nil {
			t.Fatalf("ReadPartition(%q, %d, %q): %v", topic, partition, cursor, err)
		}
		if page.Partition != partition {
			t.Fatalf("page of partition %d, want %d", page.Partition, partition)
		}
		events = append(events, page.Events...)
		cursor = page.Cursor
		pages++
	}
	if pages == 0 {
		t.Fatalf("ReadPartition(%q, %d): no page", topic, partition)
	}
	return events, cursor
}

// surface collects a whole Surface call.
func surface(t *testing.T, topic string, opts eventhub.SurfaceOptions) (events []*pb.Event, last *pb.SurfaceResponse) {
	t.Helper()
	for page, err := range client.Surface(testCtx(t), topic, opts) {
		if err != nil {
			t.Fatalf("Surface(%q, %+v): %v", topic, opts, err)
		}
		events = append(events, page.Events...)
		last = page
	}
	if last == nil {
		t.Fatalf("Surface(%q): no page", topic)
	}
	return events, last
}

// keysOf lists "key@version" of events, for compact comparisons.
func keysOf(events []*pb.Event) string {
	var s []string
	for _, e := range events {
		s = append(s, fmt.Sprintf("%s@%d", e.Key, e.KeyVersion))
	}
	return strings.Join(s, " ")
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logLines collects what a slog.TextHandler writes to it, one record per
// line, dropping records when it is full.
type logLines chan string

func (l logLines) Write(p []byte) (int, error) {
	select {
	case l <- string(p):
	default:
	}
	return len(p), nil
}

// logger returns a logger writing to l.
func (l logLines) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// drain returns the records written so far.
func (l logLines) drain() string {
	var b strings.Builder
	for {
		select {
		case line := <-l:
			b.WriteString(line)
		default:
			return b.String()
		}
	}
}

// await returns the first record containing substr written from now on
// (and any left over), or fails the test after timeout.
func (l logLines) await(t *testing.T, substr string, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case line := <-l:
			if strings.Contains(line, substr) {
				return line
			}
		case <-deadline:
			t.Fatalf("no log record containing %q within %v", substr, timeout)
			return ""
		}
	}
}
