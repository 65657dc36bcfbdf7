package eventhub_test

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eventhub/eventhub/clients/go/eventhub"
	pb "github.com/eventhub/eventhub/clients/go/eventhubv1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// checkErr asserts that err is an *eventhub.Error matching sentinel and
// carrying code and a message.
func checkErr(t *testing.T, what string, err error, sentinel error, code codes.Code) {
	t.Helper()
	var e *eventhub.Error
	switch {
	case err == nil:
		t.Errorf("%s: no error, want %v", what, code)
	case !errors.Is(err, sentinel) || status.Code(err) != code || !errors.As(err, &e):
		t.Errorf("%s: %v (code %v), want %v", what, err, status.Code(err), code)
	case strings.TrimSpace(e.Message) == "":
		t.Errorf("%s: %v has no message", what, err)
	}
}

// readErr returns the error a ReadPartition stream ends with.
func readErr(t *testing.T, topic string, partition uint32, cursor string) error {
	for _, err := range client.ReadPartition(testCtx(t), topic, partition, cursor, eventhub.ReadOptions{}) {
		if err != nil {
			return err
		}
	}
	return nil
}

// Bad input gets the documented status codes, which match the sentinels.
func TestErrorCodes(t *testing.T) {
	ctx := testCtx(t)
	topic := newTopic(t, 2)
	other := newTopic(t, 2)
	cursor0 := mustAppend(t, topic, ev(keyIn(0, 2), "T", "x")).Results[0].Cursor
	otherCursor := mustAppend(t, other, ev(keyIn(0, 2), "T", "x")).Results[0].Cursor
	missing := "no-such-topic-" + topic

	_, err := client.GetTopic(ctx, missing)
	checkErr(t, "GetTopic of an unknown topic", err, eventhub.ErrNotFound, codes.NotFound)
	checkErr(t, "ReadPartition of an unknown topic", readErr(t, missing, 0, ""), eventhub.ErrNotFound, codes.NotFound)
	checkErr(t, "partition out of range", readErr(t, topic, 2, ""), eventhub.ErrInvalidArgument, codes.InvalidArgument)
	checkErr(t, "malformed cursor", readErr(t, topic, 0, "not a cursor!"), eventhub.ErrInvalidArgument, codes.InvalidArgument)
	checkErr(t, "cursor of another partition", readErr(t, topic, 1, cursor0), eventhub.ErrInvalidArgument, codes.InvalidArgument)
	checkErr(t, "cursor of another topic", readErr(t, topic, 0, otherCursor), eventhub.ErrInvalidArgument, codes.InvalidArgument)

	for what, events := range map[string][]*pb.AppendEvent{
		"no events":          nil,
		"empty key":          {ev("", "T", "x")},
		"reserved key":       {ev("$k", "T", "x")},
		"reserved type":      {ev("k", "$invalidation", "x")},
		"bad type":           {ev("k", "has space", "x")},
		"same id twice":      {{Key: "a", Type: "T", EventId: "dup"}, {Key: "b", Type: "T", EventId: "dup"}},
		"key over 1024 byte": {ev(strings.Repeat("k", 1025), "T", "x")},
	} {
		_, err := client.Append(ctx, topic, events)
		checkErr(t, "Append with "+what, err, eventhub.ErrInvalidArgument, codes.InvalidArgument)
	}
	for _, name := range []string{".hidden", "$sys", "has space", strings.Repeat("t", 201), ""} {
		_, err := client.Append(ctx, name, []*pb.AppendEvent{ev("k", "T", "x")})
		checkErr(t, "Append to topic "+name, err, eventhub.ErrInvalidArgument, codes.InvalidArgument)
	}
	tooMany := make([]*pb.AppendEvent, 10_001)
	for i := range tooMany {
		tooMany[i] = ev("k", "T", "x")
	}
	_, err = client.Append(ctx, topic, tooMany)
	checkErr(t, "Append of 10,001 events", err, eventhub.ErrResourceExhausted, codes.ResourceExhausted)
	_, err = client.Append(ctx, topic, []*pb.AppendEvent{ev("k", "T", strings.Repeat("x", 1<<20))})
	checkErr(t, "Append of an event over 1 MiB", err, eventhub.ErrInvalidArgument, codes.InvalidArgument)
	if info, _ := client.GetTopic(ctx, topic); info.GetEventCount() != 1 {
		t.Errorf("refused appends changed the topic: %v", info)
	}

	_, _, err = client.CreateTopic(ctx, topic, 3)
	checkErr(t, "CreateTopic with another count", err, eventhub.ErrAlreadyExists, codes.AlreadyExists)
	if _, created, err := client.CreateTopic(ctx, topic, 2); err != nil || created {
		t.Errorf("CreateTopic with the same count: created %v, %v", created, err)
	}
	_, _, err = client.CreateTopic(ctx, "too-many-partitions", 1025)
	checkErr(t, "CreateTopic with 1025 partitions", err, eventhub.ErrInvalidArgument, codes.InvalidArgument)

	_, err = client.Invalidate(ctx, topic, 999_999, "why")
	checkErr(t, "Invalidate of an unknown transaction", err, eventhub.ErrNotFound, codes.NotFound)
	_, err = client.Invalidate(ctx, missing, 1, "why")
	checkErr(t, "Invalidate in an unknown topic", err, eventhub.ErrNotFound, codes.NotFound)
	_, err = client.Invalidate(ctx, topic, 1, "")
	checkErr(t, "Invalidate without a reason", err, eventhub.ErrInvalidArgument, codes.InvalidArgument)

	var surfaceErr error
	for _, err := range client.Surface(ctx, topic, eventhub.SurfaceOptions{AsOfTransaction: 999_999}) {
		surfaceErr = err
	}
	checkErr(t, "Surface as of a future transaction", surfaceErr, eventhub.ErrInvalidArgument, codes.InvalidArgument)
}

// keyIn returns a key that lands in partition p of n.
func keyIn(p, n uint32) string {
	for i := 0; ; i++ {
		if k := "key-" + string(rune('a'+i%26)) + strings.Repeat("x", i/26); eventhub.PartitionFor(k, n) == p {
			return k
		}
	}
}

// Reads are retried while the hub is unreachable, then fail UNAVAILABLE.
func TestUnavailable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c, err := eventhub.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Retry = eventhub.RetryPolicy{Attempts: 3, Initial: 10 * time.Millisecond, Max: 20 * time.Millisecond}
	ctx := testCtx(t)

	_, err = c.GetTopic(ctx, "t")
	checkErr(t, "GetTopic", err, eventhub.ErrUnavailable, codes.Unavailable)
	for _, err = range c.ReadPartition(ctx, "t", 0, "", eventhub.ReadOptions{}) {
	}
	checkErr(t, "ReadPartition", err, eventhub.ErrUnavailable, codes.Unavailable)
	_, err = c.Append(ctx, "t", []*pb.AppendEvent{ev("k", "T", "x")})
	checkErr(t, "Append", err, eventhub.ErrUnavailable, codes.Unavailable)
}
