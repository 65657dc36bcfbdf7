package eventhub_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/eventhub/eventhub/clients/go/eventhub"
	pb "github.com/eventhub/eventhub/clients/go/eventhubv1"
)

// A hub started with --tokens: WithToken's token is sent with every call,
// a call without a token is ErrUnauthenticated, and one the token's grants
// do not cover is ErrPermissionDenied.
func TestWithToken(t *testing.T) {
	dir := t.TempDir()
	const writer, reader = "go-writer-0123456789abcdef", "go-reader-0123456789abcdef"
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte(writer+" admin:go-*\n"+reader+" read:go-*\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := startHub(t, dir, "--tokens", tokens)
	dial := func(token string) *eventhub.Client {
		t.Helper()
		var c *eventhub.Client
		var err error
		if token == "" {
			c, err = eventhub.Dial(h.Addr)
		} else {
			c, err = eventhub.Dial(h.Addr, eventhub.WithToken(token))
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	ctx := testCtx(t)
	w, r, anonymous := dial(writer), dial(reader), dial("")

	if _, _, err := w.CreateTopic(ctx, "go-orders", 2); err != nil {
		t.Fatalf("CreateTopic with an admin token: %v", err)
	}
	if _, err := w.Append(ctx, "go-orders", []*pb.AppendEvent{ev("k", "T", "x")}); err != nil {
		t.Fatalf("Append with an admin token: %v", err)
	}
	if _, err := r.GetTopic(ctx, "go-orders"); err != nil {
		t.Fatalf("GetTopic with a read token: %v", err)
	}
	if _, err := r.Append(ctx, "go-orders", []*pb.AppendEvent{ev("k", "T", "y")}); !errors.Is(err, eventhub.ErrPermissionDenied) {
		t.Fatalf("Append with a read token: %v, want ErrPermissionDenied", err)
	}
	if _, err := anonymous.GetTopic(ctx, "go-orders"); !errors.Is(err, eventhub.ErrUnauthenticated) {
		t.Fatalf("GetTopic without a token: %v, want ErrUnauthenticated", err)
	}
}
