package eventhub_test

import (
	"context"
	"database/sql"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventhub/eventhub/clients/go/eventhub"
	pb "github.com/eventhub/eventhub/clients/go/eventhubv1"
)

// blackholeProxy forwards the TCP connections it accepts on 127.0.0.1 to a
// target. Blackhole cuts every connection open at that moment as a peer or
// a middlebox that vanishes does: nothing more is forwarded either way and
// the sockets are neither read nor closed, so neither end learns anything.
// Connections accepted later are forwarded normally.
type blackholeProxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup // the accept loop and the forwarding goroutines

	mu     sync.Mutex
	conns  []*proxiedConn // every connection accepted, in order
	closed bool
}

// proxiedConn is an accepted connection and its connection to the target.
type proxiedConn struct {
	client, target net.Conn
	blackholed     atomic.Bool
	ended          atomic.Bool  // a side closed it, before any blackhole
	toClient       atomic.Int64 // bytes forwarded from the target
	// writing is held while a chunk is forwarded, so that Blackhole can
	// wait for one under way: nothing is forwarded after it returns.
	writing sync.Mutex
}

// startProxy starts a proxy to target, closed when t ends.
func startProxy(t *testing.T, target string) *blackholeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &blackholeProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		done := make(chan struct{})
		go func() { p.close(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("the proxy's goroutines did not end within 10s of closing its sockets")
		}
	})
	return p
}

// Addr is where the proxy listens.
func (p *blackholeProxy) Addr() string { return p.ln.Addr().String() }

func (p *blackholeProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		target, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			client.Close()
			continue
		}
		pc := &proxiedConn{client: client, target: target}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			client.Close()
			target.Close()
			return
		}
		p.conns = append(p.conns, pc)
		p.wg.Add(2)
		p.mu.Unlock()
		go func() { defer p.wg.Done(); pc.forward(client, target, &pc.toClient) }()
		go func() { defer p.wg.Done(); pc.forward(target, client, nil) }()
	}
}

// forward copies src to dst until either fails (then it closes both
// connections) or the connection is blackholed (then it leaves them open
// and stops reading).
func (pc *proxiedConn) forward(dst, src net.Conn, forwarded *atomic.Int64) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		// Blackhole sets past deadlines after the flag; a deadline
		// error means the same.
		if pc.blackholed.Load() || errors.Is(err, os.ErrDeadlineExceeded) {
			return
		}
		if n > 0 {
			pc.writing.Lock()
			if pc.blackholed.Load() {
				pc.writing.Unlock()
				return // drop what was read: it is lost in the dead link
			}
			_, werr := dst.Write(buf[:n])
			pc.writing.Unlock()
			if werr != nil {
				if pc.blackholed.Load() || errors.Is(werr, os.ErrDeadlineExceeded) {
					return
				}
				err = werr
			} else if forwarded != nil {
				forwarded.Add(int64(n))
			}
		}
		if err != nil {
			pc.ended.Store(true)
			pc.client.Close()
			pc.target.Close()
			return
		}
	}
}

// Blackhole cuts every connection open now and returns how many there were.
func (p *blackholeProxy) Blackhole() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, pc := range p.conns {
		if pc.ended.Load() || pc.blackholed.Swap(true) {
			continue
		}
		// Wake the goroutines blocked in Read (or in Write) without
		// closing anything, then wait for a chunk being forwarded.
		pc.client.SetDeadline(time.Unix(1, 0))
		pc.target.SetDeadline(time.Unix(1, 0))
		pc.writing.Lock()
		pc.writing.Unlock()
		n++
	}
	return n
}

// Accepted returns the connections accepted so far, in order.
func (p *blackholeProxy) Accepted() []*proxiedConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*proxiedConn(nil), p.conns...)
}

// close closes the listener and every connection, blackholed or not, and
// waits for the proxy's goroutines.
func (p *blackholeProxy) close() {
	p.mu.Lock()
	p.closed = true
	p.ln.Close()
	for _, pc := range p.conns {
		pc.client.Close()
		pc.target.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// A connection that dies silently (here a proxy stops forwarding without
// closing anything) is closed by the keepalive that Dial sets by default
// (a ping after 20s without hearing from the hub, unanswered for 10s), so
// the consumer's retried stream gets a new connection and receives what is
// appended after the connection died. Without the keepalive the consumer
// would keep reopening its stream on the dead connection: its stall is
// reported before the keepalive can act, and the event can only arrive
// through a connection the proxy accepted after the blackhole.
func TestKeepaliveReplacesDeadConnection(t *testing.T) {
	h, direct := ownHub(t, "keepalive")
	proxy := startProxy(t, h.Addr)
	c, err := eventhub.Dial(proxy.Addr()) // Dial's keepalive, unchanged
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	logs := make(logLines, 1000)
	received := make(chan string, 16)
	consumer := &eventhub.Consumer{Client: c, DB: openDB(t), Name: "test", Topic: "keepalive",
		Heartbeat: 200 * time.Millisecond, Logger: logs.logger(),
		// Short waits between retries, so that the consumer is soon back
		// on the connection when the keepalive closes it.
		Retry: eventhub.RetryPolicy{Max: 500 * time.Millisecond},
		Handler: func(ctx context.Context, tx *sql.Tx, page *pb.ReadPartitionResponse) error {
			for _, e := range page.Events {
				received <- string(e.Payload)
			}
			return nil
		}}
	var runErr error
	done := make(chan struct{}) // closed when Run has returned runErr
	go func() { runErr = consumer.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
			if runErr != nil {
				t.Errorf("Run: %v", runErr)
			}
		case <-time.After(20 * time.Second):
			t.Error("Consumer.Run did not return within 20s of cancel")
		}
		if t.Failed() {
			t.Logf("consumer log:\n%s", logs.drain())
		}
	})
	appendDirect := func(payload string) {
		t.Helper()
		if _, err := direct.Append(testCtx(t), "keepalive", []*pb.AppendEvent{ev("k", "T", payload)}); err != nil {
			t.Fatal(err)
		}
	}
	awaitEvent := func(want string, timeout time.Duration) {
		t.Helper()
		select {
		case got := <-received:
			if got != want {
				t.Fatalf("received event %q, want %q", got, want)
			}
		case <-done:
			t.Fatalf("Run: %v", runErr)
		case <-time.After(timeout):
			t.Fatalf("event %q not received within %v", want, timeout)
		}
	}

	appendDirect("before")
	awaitEvent("before", 10*time.Second)
	before := len(proxy.Accepted())
	if before == 0 {
		t.Fatal("the consumer received an event without a connection through the proxy")
	}

	logs.drain()
	cut := proxy.Blackhole()
	blackholed := time.Now()
	if cut != before {
		t.Fatalf("blackholed %d connections of the %d accepted; want all of them", cut, before)
	}
	// The watchdog notices the silence and reopens the stream, on the
	// same dead connection: the keepalive cannot have closed it yet.
	logs.await(t, "three heartbeat intervals", 10*time.Second)
	if n := len(proxy.Accepted()); n != before {
		t.Fatalf("%d connections accepted before the keepalive could close the dead one; want %d", n, before)
	}

	appendDirect("after")
	awaitEvent("after", 60*time.Second)
	elapsed := time.Since(blackholed)
	accepted := proxy.Accepted()
	var carried int64
	for _, pc := range accepted[before:] {
		carried += pc.toClient.Load()
	}
	if len(accepted) == before || carried == 0 {
		t.Fatalf("event received with %d connections accepted since the blackhole, carrying %d bytes from the hub; want it through a new one",
			len(accepted)-before, carried)
	}
	t.Logf("event received %v after the blackhole, through %d new connection(s)", elapsed.Round(100*time.Millisecond), len(accepted)-before)
}
