package eventhub

import (
	"context"
	"errors"
	"io"
	"iter"
	"math/rand/v2"
	"time"

	pb "github.com/eventhub/eventhub/clients/go/eventhubv1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// RetryPolicy says how reads are retried while the hub answers UNAVAILABLE
// (it is restarting, or its database is unreachable).
type RetryPolicy struct {
	// Attempts is the most tries of one call; a stream that delivered a
	// page counts afresh from there. 1 disables retries; 0 means 8.
	Attempts int
	// Initial is the delay before the first retry (0 means 100ms); it
	// doubles on each further one up to Max (0 means 5s), with jitter.
	Initial, Max time.Duration
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.Attempts <= 0 {
		p.Attempts = 8
	}
	if p.Initial <= 0 {
		p.Initial = 100 * time.Millisecond
	}
	if p.Max <= 0 {
		p.Max = 5 * time.Second
	}
	return p
}

// backoff waits before retry number n (1, 2, …) or until ctx is done.
func (p RetryPolicy) backoff(ctx context.Context, n int) error {
	d := p.Initial << min(n-1, 30)
	if d > p.Max || d <= 0 {
		d = p.Max
	}
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// retry runs a unary call until it succeeds, fails with another code than
// UNAVAILABLE, or the policy gives up.
func (c *Client) retry(ctx context.Context, call func() error) error {
	p := c.Retry.withDefaults()
	for n := 1; ; n++ {
		err := call()
		if err == nil || status.Code(err) != codes.Unavailable || n >= p.Attempts {
			return wrap(err, nil)
		}
		if werr := p.backoff(ctx, n); werr != nil {
			return wrap(status.FromContextError(werr).Err(), nil)
		}
	}
}

// stream yields the messages of a server stream opened by open. When the
// stream fails with UNAVAILABLE it is opened again (with backoff); open
// resumes after the last message delivered, which it learns from seen. open
// returns a nil stream when nothing is left to read.
func stream[T any](ctx context.Context, p RetryPolicy, open func(context.Context) (grpc.ServerStreamingClient[T], error), seen func(*T)) iter.Seq2[*T, error] {
	return func(yield func(*T, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		for failures := 0; ; {
			s, err := open(ctx)
			if s == nil && err == nil {
				return
			}
			for err == nil {
				var msg *T
				if msg, err = s.Recv(); err == nil {
					failures = 0
					seen(msg)
					if !yield(msg, nil) {
						return
					}
				}
			}
			if errors.Is(err, io.EOF) {
				return
			}
			failures++
			if status.Code(err) != codes.Unavailable || failures >= p.Attempts {
				yield(nil, wrap(err, nil))
				return
			}
			if werr := p.backoff(ctx, failures); werr != nil {
				yield(nil, wrap(status.FromContextError(werr).Err(), nil))
				return
			}
		}
	}
}

// ReadOptions tune ReadPartition. The zero value reads pages of 100 events
// until caught up, without waiting.
type ReadOptions struct {
	// MaxEvents per page; 0 means 100.
	MaxEvents uint32
	// Wait is how long to wait for an event when none is past the cursor
	// (long-poll).
	Wait time.Duration
	// Follow keeps the stream open and pushes events as they commit.
	Follow bool
	// Heartbeat is, with Follow, the longest gap between pages; 0 means 5s.
	Heartbeat time.Duration
	// Types, when not empty, keeps only events of these types; the cursor
	// still moves past the others.
	Types []string
}

// ReadPartition yields pages of one partition from cursor (First, Last, or
// a cursor from an earlier page or event). After an UNAVAILABLE it resumes
// from the last page's cursor, so no event is skipped or repeated.
func (c *Client) ReadPartition(ctx context.Context, topic string, partition uint32, cursor string, opts ReadOptions) iter.Seq2[*pb.ReadPartitionResponse, error] {
	return func(yield func(*pb.ReadPartitionResponse, error) bool) {
		req := &pb.ReadPartitionRequest{
			Topic:       topic,
			Partition:   partition,
			Cursor:      cursor,
			MaxEvents:   opts.MaxEvents,
			WaitMs:      millis(opts.Wait),
			Follow:      opts.Follow,
			Types:       opts.Types,
			HeartbeatMs: millis(opts.Heartbeat),
		}
		open := func(ctx context.Context) (grpc.ServerStreamingClient[pb.ReadPartitionResponse], error) {
			return c.api.ReadPartition(ctx, req)
		}
		seen := func(page *pb.ReadPartitionResponse) { req.Cursor = page.Cursor }
		stream(ctx, c.Retry.withDefaults(), open, seen)(yield)
	}
}

// SurfaceOptions select the keys of a Surface call.
type SurfaceOptions struct {
	// KeyPrefix keeps only keys starting with it.
	KeyPrefix string
	// AfterKey keeps only keys sorted after it (pass NextAfterKey).
	AfterKey string
	// Limit is the most keys to return; 0 means all.
	Limit uint32
	// AsOfTransaction, when not 0, asks for the surface as it stood after
	// that transaction (pass AsOfTransaction of an earlier page).
	AsOfTransaction uint64
}

// Surface yields pages holding the latest valid event of every key, sorted
// by key, with the per-partition cursors to continue reading from. A
// resumed stream keeps the snapshot of its first page.
func (c *Client) Surface(ctx context.Context, topic string, opts SurfaceOptions) iter.Seq2[*pb.SurfaceResponse, error] {
	return func(yield func(*pb.SurfaceResponse, error) bool) {
		req := &pb.SurfaceRequest{
			Topic:           topic,
			KeyPrefix:       opts.KeyPrefix,
			AfterKey:        opts.AfterKey,
			Limit:           opts.Limit,
			AsOfTransaction: opts.AsOfTransaction,
		}
		done := false
		open := func(ctx context.Context) (grpc.ServerStreamingClient[pb.SurfaceResponse], error) {
			if done {
				return nil, nil
			}
			return c.api.Surface(ctx, req)
		}
		seen := func(page *pb.SurfaceResponse) {
			if page.AsOfTransaction != 0 {
				req.AsOfTransaction = page.AsOfTransaction
			}
			if n := len(page.Events); n > 0 {
				req.AfterKey = page.Events[n-1].Key
				if req.Limit > 0 {
					req.Limit -= min(req.Limit, uint32(n))
					done = req.Limit == 0
				}
			}
		}
		stream(ctx, c.Retry.withDefaults(), open, seen)(yield)
	}
}

// ReadKey yields pages of one key's events in key-version order, starting
// at fromVersion (0 or 1: from the start). An unknown key gives one empty
// page with CurrentVersion 0.
func (c *Client) ReadKey(ctx context.Context, topic, key string, fromVersion uint64) iter.Seq2[*pb.ReadKeyResponse, error] {
	return func(yield func(*pb.ReadKeyResponse, error) bool) {
		req := &pb.ReadKeyRequest{Topic: topic, Key: key, FromVersion: fromVersion}
		open := func(ctx context.Context) (grpc.ServerStreamingClient[pb.ReadKeyResponse], error) {
			return c.api.ReadKey(ctx, req)
		}
		seen := func(page *pb.ReadKeyResponse) {
			if n := len(page.Events); n > 0 {
				req.FromVersion = page.Events[n-1].KeyVersion + 1
			}
		}
		stream(ctx, c.Retry.withDefaults(), open, seen)(yield)
	}
}

func millis(d time.Duration) uint32 {
	return uint32(max(0, min(d.Milliseconds(), int64(^uint32(0)))))
}
