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

// RetryPolicy says how calls are retried when the hub answers UNAVAILABLE
// (it is restarting, or its database is unreachable) and, for follow
// reads, when the stream breaks: the hub ends it (it is shutting down) or
// nothing arrives for three heartbeat intervals (see ReadOptions.Follow).
// A stream is reopened after the last page it delivered, so nothing is
// skipped or repeated. Other errors are never retried.
type RetryPolicy struct {
	// Attempts is the most tries of one call; a stream that delivered a
	// page (heartbeats included) counts afresh from there. 1 disables
	// retries, a negative value retries without limit, and 0 means the
	// default of who uses the policy: 8 tries for a Client (giving up after
	// about 6 to 11 seconds), no limit for a Consumer.
	Attempts int
	// Initial is the delay before the first retry (0 means 100ms); it
	// doubles on each further one up to Max (0 means 5s). Each delay is
	// drawn at random from the upper half of its range (jitter).
	Initial, Max time.Duration
}

// Default retry attempts of a Client's calls and of a Consumer's reads.
const (
	clientAttempts   = 8
	consumerAttempts = -1
)

func (p RetryPolicy) withDefaults(attempts int) RetryPolicy {
	if p.Attempts == 0 {
		p.Attempts = attempts
	}
	if p.Initial <= 0 {
		p.Initial = 100 * time.Millisecond
	}
	if p.Max <= 0 {
		p.Max = 5 * time.Second
	}
	return p
}

// exhausted reports whether a call that failed failures times in a row
// may not be tried again.
func (p RetryPolicy) exhausted(failures int) bool {
	return p.Attempts > 0 && failures >= p.Attempts
}

// delay is the wait before retry number n (1, 2, …).
func (p RetryPolicy) delay(n int) time.Duration {
	d := p.Initial << min(n-1, 30)
	if d > p.Max || d <= 0 {
		d = p.Max
	}
	return d/2 + rand.N(d/2+1)
}

// retryReport is told of each failure that is about to be retried: the
// error, the failures in a row so far and the delay before the next try.
type retryReport func(err error, failures int, delay time.Duration)

// backoff waits before retry number n, after telling report (if any) why,
// or until ctx is done.
func (p RetryPolicy) backoff(ctx context.Context, n int, err error, report retryReport) error {
	d := p.delay(n)
	if report != nil {
		report(err, n, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// retry runs a unary call with the Client's policy.
func (c *Client) retry(ctx context.Context, call func() error) error {
	return retryCall(ctx, c.Retry.withDefaults(clientAttempts), nil, call)
}

// retryCall runs a unary call until it succeeds, fails with another code
// than UNAVAILABLE, or the policy gives up.
func retryCall(ctx context.Context, p RetryPolicy, report retryReport, call func() error) error {
	for n := 1; ; n++ {
		err := call()
		if err == nil || status.Code(err) != codes.Unavailable || p.exhausted(n) {
			return wrap(err, nil)
		}
		if werr := p.backoff(ctx, n, wrap(err, nil), report); werr != nil {
			return wrap(status.FromContextError(werr).Err(), nil)
		}
	}
}

// errStalled is the cause with which a follow stream's call is cancelled
// when nothing arrived within its idle limit.
var errStalled = errors.New("eventhub: follow stream stalled")

// streamSpec says how stream opens and retries a server stream.
type streamSpec[T any] struct {
	policy RetryPolicy
	report retryReport
	// follow marks a stream that should never end: when the hub ends it,
	// it is reopened as after UNAVAILABLE.
	follow bool
	// idle, when not 0, is the longest wait for the next message (or for
	// the first, from the call's start); a call that waits longer is
	// cancelled and reopened as after UNAVAILABLE.
	idle time.Duration
	// open starts the call, resuming after the last message delivered,
	// which it learns from seen. It returns a nil stream when nothing is
	// left to read.
	open func(context.Context) (grpc.ServerStreamingClient[T], error)
	seen func(*T)
}

// stream yields the messages of a server stream, reopening it as s says.
func stream[T any](ctx context.Context, s streamSpec[T]) iter.Seq2[*T, error] {
	return func(yield func(*T, error) bool) {
		failures := 0
		for {
			stopped, err := s.call(ctx, yield, &failures)
			if stopped {
				return
			}
			if errors.Is(err, io.EOF) {
				if !s.follow {
					return
				}
				err = status.Error(codes.Unavailable, "the hub ended the follow stream (it is shutting down)")
			}
			failures++
			if status.Code(err) != codes.Unavailable || s.policy.exhausted(failures) {
				yield(nil, wrap(err, nil))
				return
			}
			if werr := s.policy.backoff(ctx, failures, wrap(err, nil), s.report); werr != nil {
				yield(nil, wrap(status.FromContextError(werr).Err(), nil))
				return
			}
		}
	}
}

// call makes one call of s and yields its messages. It returns stopped when
// yield asked to stop, and otherwise the error the call ended with (io.EOF
// when the hub ended it, or when nothing was left to read). Each message
// resets failures.
func (s streamSpec[T]) call(ctx context.Context, yield func(*T, error) bool, failures *int) (stopped bool, err error) {
	callCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var watchdog *time.Timer
	if s.idle > 0 {
		// Armed only while waiting for the hub, not while yield runs.
		watchdog = time.AfterFunc(s.idle, func() { cancel(errStalled) })
		defer watchdog.Stop()
	}
	st, err := s.open(callCtx)
	if st == nil && err == nil {
		return false, io.EOF
	}
	for err == nil {
		var msg *T
		if msg, err = st.Recv(); err != nil {
			break
		}
		if watchdog != nil {
			watchdog.Stop()
		}
		*failures = 0
		s.seen(msg)
		if !yield(msg, nil) {
			return true, nil
		}
		if watchdog != nil {
			watchdog.Reset(s.idle)
		}
	}
	if ctx.Err() == nil && errors.Is(context.Cause(callCtx), errStalled) {
		err = status.Errorf(codes.Unavailable, "no page or heartbeat from the hub for %v (three heartbeat intervals)", s.idle)
	}
	return false, err
}

// ReadOptions tune ReadPartition. The zero value reads pages of 100 events
// until caught up, without waiting.
type ReadOptions struct {
	// MaxEvents per page; 0 means 100.
	MaxEvents uint32
	// Wait is how long to wait for an event when none is past the cursor
	// (long-poll).
	Wait time.Duration
	// Follow keeps the stream open and pushes events as they commit, with
	// an empty heartbeat page at least every Heartbeat. A follow stream
	// has no end: when the hub ends it (it is shutting down), or when
	// nothing, not even a heartbeat, arrives for three heartbeat intervals
	// (the connection died silently), the call is cancelled and reopened
	// after the last page, as after UNAVAILABLE. The time the caller takes
	// between two pages does not count.
	Follow bool
	// Heartbeat is, with Follow, the longest gap between pages; 0 means
	// 5s, and the hub raises values below 50ms to 50ms.
	Heartbeat time.Duration
	// Types, when not empty, keeps only events of these types; the cursor
	// still moves past the others. Invalidation markers are sent only when
	// InvalidationType is listed.
	Types []string
}

// ReadPartition yields pages of one partition from cursor (First, Last, or
// a cursor from an earlier page or event). It is retried as Client.Retry
// says, resuming after the last page delivered, so no event is skipped or
// repeated.
func (c *Client) ReadPartition(ctx context.Context, topic string, partition uint32, cursor string, opts ReadOptions) iter.Seq2[*pb.ReadPartitionResponse, error] {
	return c.readPartition(ctx, topic, partition, cursor, opts, c.Retry.withDefaults(clientAttempts), nil)
}

func (c *Client) readPartition(ctx context.Context, topic string, partition uint32, cursor string, opts ReadOptions, policy RetryPolicy, report retryReport) iter.Seq2[*pb.ReadPartitionResponse, error] {
	return func(yield func(*pb.ReadPartitionResponse, error) bool) {
		req := &pb.ReadPartitionRequest{
			Topic:     topic,
			Partition: partition,
			Cursor:    cursor,
			MaxEvents: opts.MaxEvents,
			WaitMs:    millis(opts.Wait),
			Follow:    opts.Follow,
			Types:     opts.Types,
		}
		var idle time.Duration
		if opts.Follow {
			// Ask for the interval explicitly, so that the hub and the
			// watchdog agree on it.
			heartbeat := opts.Heartbeat
			if heartbeat <= 0 {
				heartbeat = 5 * time.Second
			}
			heartbeat = max(heartbeat, 50*time.Millisecond)
			req.HeartbeatMs = millis(heartbeat)
			idle = 3 * time.Duration(req.HeartbeatMs) * time.Millisecond
		}
		stream(ctx, streamSpec[pb.ReadPartitionResponse]{
			policy: policy,
			report: report,
			follow: opts.Follow,
			idle:   idle,
			open: func(ctx context.Context) (grpc.ServerStreamingClient[pb.ReadPartitionResponse], error) {
				return c.api.ReadPartition(ctx, req)
			},
			seen: func(page *pb.ReadPartitionResponse) { req.Cursor = page.Cursor },
		})(yield)
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
		stream(ctx, streamSpec[pb.SurfaceResponse]{policy: c.Retry.withDefaults(clientAttempts), open: open, seen: seen})(yield)
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
		stream(ctx, streamSpec[pb.ReadKeyResponse]{policy: c.Retry.withDefaults(clientAttempts), open: open, seen: seen})(yield)
	}
}

func millis(d time.Duration) uint32 {
	return uint32(max(0, min(d.Milliseconds(), int64(^uint32(0)))))
}
