// Package testhub starts a real eventhub process for tests.
package testhub

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Hub is a running `eventhub serve` process.
type Hub struct {
	// Addr is the host:port it listens on.
	Addr string
	// Log is the file holding its stderr.
	Log string

	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has exited
	waitErr error         // how it exited
}

// Bin returns the hub binary: $EVENTHUB_BIN, or target/debug/eventhub in
// the repository holding the current directory.
func Bin() (string, error) {
	if bin := os.Getenv("EVENTHUB_BIN"); bin != "" {
		return filepath.Abs(bin)
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "Cargo.toml")); err == nil {
			return filepath.Join(dir, "target", "debug", "eventhub"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("testhub: no Cargo.toml above the current directory; set EVENTHUB_BIN")
		}
		dir = parent
	}
}

// Start runs `eventhub serve` on listen (e.g. 127.0.0.1:0) with a SQLite
// database in dir, and waits for the line announcing its address.
func Start(dir, listen string, extra ...string) (*Hub, error) {
	bin, err := Bin()
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("testhub: hub binary: %w (build it, or set EVENTHUB_BIN)", err)
	}
	logf, err := os.OpenFile(filepath.Join(dir, "hub.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := append([]string{"serve", "--listen", listen, "--database", "sqlite://" + filepath.Join(dir, "hub.db")}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	h := &Hub{Log: logf.Name(), cmd: cmd, exited: make(chan struct{})}

	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "eventhub listening on "); ok {
				addr <- a
				break
			}
		}
		for sc.Scan() { // drain, so the hub never blocks on stdout
		}
		h.waitErr = cmd.Wait()
		close(h.exited)
	}()
	select {
	case h.Addr = <-addr:
		return h, nil
	case <-h.exited:
		return nil, fmt.Errorf("testhub: hub exited before listening (%v); see %s", h.waitErr, h.Log)
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		return nil, fmt.Errorf("testhub: hub did not announce its address within 30s; see %s", h.Log)
	}
}

// Pause stops the hub with SIGSTOP: its connections stay open but nothing
// answers, as when a peer or the network dies silently.
func (h *Hub) Pause() error { return h.cmd.Process.Signal(syscall.SIGSTOP) }

// Resume continues a paused hub with SIGCONT.
func (h *Hub) Resume() error { return h.cmd.Process.Signal(syscall.SIGCONT) }

// Stop ends the hub with SIGTERM (SIGKILL after 10s) and waits for it.
// A paused hub is resumed first, so that it can shut down gracefully.
func (h *Hub) Stop() error {
	h.cmd.Process.Signal(syscall.SIGCONT)
	h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.exited:
		return h.waitErr
	case <-time.After(10 * time.Second):
		h.Kill()
		return errors.New("testhub: hub still running 10s after SIGTERM")
	}
}

// Kill ends the hub with SIGKILL, if it still runs, and waits for it.
func (h *Hub) Kill() {
	h.cmd.Process.Kill()
	<-h.exited
}

// Tail returns the end of the hub's log, for failure reports.
func (h *Hub) Tail() string {
	b, _ := os.ReadFile(h.Log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}
