package eventhub

import (
	"context"
	"iter"
	"time"

	pb "github.com/eventhub/eventhub/clients/go/eventhubv1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
)

// Reserved cursors: before the first event, and the head of a partition as
// of the call.
const (
	First = "_first"
	Last  = "_last"
)

// InvalidationType is the type of invalidation markers, the events that
// Invalidate appends after the events of the transaction it invalidates
// (see Event.invalidation in the proto).
const InvalidationType = "$invalidation"

// Client calls an eventhub. It is safe for concurrent use.
type Client struct {
	// Retry says how reads (every call but Append, Invalidate and
	// CreateTopic) are retried. Set it before the first call; the zero
	// value tries a call 8 times, waiting 100ms doubling up to 5s in
	// between, with jitter.
	Retry RetryPolicy

	api  pb.EventHubServiceClient
	conn *grpc.ClientConn // closed by Close when Dial opened it
}

// Dial connects to the hub at target (host:port or any gRPC target). The
// connection is plaintext unless opts set transport credentials. While the
// hub is unreachable, gRPC tries to reconnect at least every 5 seconds
// (its own default backs off up to 2 minutes, which would keep a consumer
// waiting that long after the hub is back).
//
// While a call is open, gRPC also pings the hub (an HTTP/2 ping) when
// nothing has arrived on the connection for 20 seconds, and closes the
// connection when no answer comes within 10 seconds. A connection that
// died silently (the hub's host vanished, a NAT or load balancer dropped
// it) is then closed within about half a minute, and the calls on it fail
// UNAVAILABLE: a retried read, such as the follow stream that a Consumer
// reopens after three silent heartbeat intervals, gets a new connection
// instead of waiting on the dead one until the operating system gives up
// on it, which takes many minutes. A follow read receives a heartbeat at
// least every 5 seconds by default, so a live connection is rarely pinged;
// an idle one (no call open) is not pinged at all. On Linux, gRPC also sets
// TCP_USER_TIMEOUT to the ping timeout, so data the peer does not
// acknowledge for 10 seconds closes the connection too.
//
// opts come after these defaults and override them: pass
// grpc.WithKeepaliveParams to change the pings (gRPC raises a Time below
// 10 seconds to 10 seconds).
func Dial(target string, opts ...grpc.DialOption) (*Client, error) {
	reconnect := backoff.DefaultConfig
	reconnect.MaxDelay = 5 * time.Second
	opts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: reconnect, MinConnectTimeout: 20 * time.Second}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 20 * time.Second, Timeout: 10 * time.Second}),
	}, opts...)
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, err
	}
	return &Client{api: pb.NewEventHubServiceClient(conn), conn: conn}, nil
}

// WithToken is a Dial option that sends the metadata
// "authorization: Bearer <token>" with every call, for a hub started with
// --tokens. Dial's default connection is plaintext, which suits loopback;
// elsewhere add TLS (grpc.WithTransportCredentials) so that the token does
// not travel in the clear.
func WithToken(token string) grpc.DialOption {
	return grpc.WithPerRPCCredentials(bearerToken(token))
}

type bearerToken string

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

// RequireTransportSecurity is false so that a token can be used over
// Dial's plaintext default (on loopback, say).
func (bearerToken) RequireTransportSecurity() bool { return false }

// NewClient returns a Client over an existing connection, which the caller
// keeps and closes.
func NewClient(conn grpc.ClientConnInterface) *Client {
	return &Client{api: pb.NewEventHubServiceClient(conn)}
}

// Close closes the connection opened by Dial.
func (c *Client) Close() error {
	if c.conn == nil {
		return nil
	}
	return c.conn.Close()
}

// API returns the generated stub, for what this package does not wrap.
func (c *Client) API() pb.EventHubServiceClient { return c.api }

// AppendOption changes an Append request.
type AppendOption func(*pb.AppendRequest)

// DedupByContent skips every event whose key's latest valid event has the
// same type, content type, headers and payload.
func DedupByContent() AppendOption {
	return func(r *pb.AppendRequest) { r.DedupByContent = true }
}

// Append stores events in topic as one transaction. It is not retried: give
// events an EventId to make retrying it yourself safe. A key version
// mismatch is a *VersionConflictError.
func (c *Client) Append(ctx context.Context, topic string, events []*pb.AppendEvent, opts ...AppendOption) (*pb.AppendResponse, error) {
	req := &pb.AppendRequest{Topic: topic, Events: events}
	for _, o := range opts {
		o(req)
	}
	var trailer metadata.MD
	resp, err := c.api.Append(ctx, req, grpc.Trailer(&trailer))
	return resp, wrap(err, trailer)
}

// Invalidate marks a committed transaction invalid; the hub appends a
// marker event to every partition holding its events.
func (c *Client) Invalidate(ctx context.Context, topic string, transactionID uint64, reason string) (*pb.InvalidateResponse, error) {
	resp, err := c.api.Invalidate(ctx, &pb.InvalidateRequest{Topic: topic, TransactionId: transactionID, Reason: reason})
	return resp, wrap(err, nil)
}

// CreateTopic creates a topic with partitions partitions (0: the hub's
// default). created is false when it already existed with that count.
func (c *Client) CreateTopic(ctx context.Context, name string, partitions uint32) (topic *pb.Topic, created bool, err error) {
	resp, err := c.api.CreateTopic(ctx, &pb.CreateTopicRequest{Name: name, PartitionCount: partitions})
	if err != nil {
		return nil, false, wrap(err, nil)
	}
	return resp.GetTopic(), resp.GetCreated(), nil
}

// GetTopic describes a topic and its partitions.
func (c *Client) GetTopic(ctx context.Context, name string) (*pb.Topic, error) {
	var resp *pb.GetTopicResponse
	err := c.retry(ctx, func() (err error) {
		resp, err = c.api.GetTopic(ctx, &pb.GetTopicRequest{Name: name})
		return err
	})
	return resp.GetTopic(), err
}

// ListTopics yields the topics whose name starts with prefix, sorted by
// name, fetching further pages as needed.
func (c *Client) ListTopics(ctx context.Context, prefix string) iter.Seq2[*pb.Topic, error] {
	return func(yield func(*pb.Topic, error) bool) {
		req := &pb.ListTopicsRequest{NamePrefix: prefix}
		for {
			var resp *pb.ListTopicsResponse
			err := c.retry(ctx, func() (err error) {
				resp, err = c.api.ListTopics(ctx, req)
				return err
			})
			if err != nil {
				yield(nil, err)
				return
			}
			for _, t := range resp.Topics {
				if !yield(t, nil) {
					return
				}
			}
			if resp.NextAfterName == "" {
				return
			}
			req.AfterName = resp.NextAfterName
		}
	}
}
