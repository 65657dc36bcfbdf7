package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/eventhub/eventhub/clients/go/eventhub"
	pb "github.com/eventhub/eventhub/clients/go/eventhubv1"
	"github.com/eventhub/eventhub/clients/go/internal/testhub"
)

// TestMain runs the projector itself when the test binary is re-executed
// as a child by TestExactlyOnceAcrossKills.
func TestMain(m *testing.M) {
	if os.Getenv("PROJECTOR_CHILD") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// The projector, killed with SIGKILL at random points while events keep
// coming and restarted each time, ends with every event applied exactly
// once.
func TestExactlyOnceAcrossKills(t *testing.T) {
	const (
		total = 3000
		keys  = 50
		kills = 5
	)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	hub, err := testhub.Start(dir, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("hub log:\n%s", hub.Tail())
		}
		hub.Stop()
	}()
	client, err := eventhub.Dial(hub.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, _, err := client.CreateTopic(ctx, "orders", 4); err != nil {
		t.Fatal(err)
	}

	produced := make(chan error, 1)
	go func() {
		for i := 0; i < total; i += 100 {
			var batch []*pb.AppendEvent
			for j := i; j < i+100; j++ {
				batch = append(batch, &pb.AppendEvent{Key: fmt.Sprintf("order-%d", j%keys), Type: "OrderUpdated", Payload: []byte(fmt.Sprint(j))})
			}
			if _, err := client.Append(ctx, "orders", batch); err != nil {
				produced <- err
				return
			}
		}
		produced <- nil
	}()

	path := filepath.Join(dir, "projection.db")
	logPath := filepath.Join(dir, "projector.log")
	output := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	type child struct {
		cmd    *exec.Cmd
		exited chan error
	}
	spawn := func() child {
		logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer logf.Close()
		cmd := exec.Command(os.Args[0], "-hub", hub.Addr, "-topic", "orders", "-db", path, "-page", "10")
		cmd.Env = append(os.Environ(), "PROJECTOR_CHILD=1")
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		c := child{cmd, make(chan error, 1)}
		go func() { c.exited <- cmd.Wait() }()
		return c
	}
	applied := func() int {
		db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
		if err != nil {
			return -1
		}
		defer db.Close()
		var n int
		if db.QueryRowContext(ctx, `SELECT coalesce(sum(events), 0) FROM projection`).Scan(&n) != nil {
			return -1
		}
		return n
	}
	waitApplied := func(c child, atLeast int) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for applied() < atLeast {
			select {
			case err := <-c.exited:
				t.Fatalf("projector exited (%v) before applying %d events; its output:\n%s", err, atLeast, output())
			case <-time.After(10 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				c.cmd.Process.Kill()
				t.Fatalf("projector did not reach %d events in 60s (at %d); its output:\n%s", atLeast, applied(), output())
			}
		}
	}

	for i := 1; i <= kills; i++ {
		c := spawn()
		waitApplied(c, i*total/(kills+1))
		c.cmd.Process.Kill()
		<-c.exited
		t.Logf("killed projector %d with %d events applied", i, applied())
	}
	if err := <-produced; err != nil {
		t.Fatal(err)
	}
	c := spawn()
	waitApplied(c, total)
	c.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-c.exited; err != nil {
		t.Fatalf("projector after SIGTERM: %v; its output:\n%s", err, output())
	}

	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, `SELECT key, events, version FROM projection`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	seen := 0
	for rows.Next() {
		var key string
		var events, version int
		if err := rows.Scan(&key, &events, &version); err != nil {
			t.Fatal(err)
		}
		seen++
		if events != total/keys || version != total/keys {
			t.Errorf("%s: applied %d events up to version %d, want %d exactly once", key, events, version, total/keys)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if seen != keys {
		t.Errorf("projection holds %d keys, want %d", seen, keys)
	}
}
