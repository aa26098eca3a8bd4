package main

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// --registry-timeout bounds how long a registry that accepts connections
// and never answers holds a command; the error says what happened.
func TestRegistryTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, obdfsBin, "cat", "--length", "512", "--insecure", "--cache-dir", t.TempDir(),
		"--registry-timeout", "1s", "--registry-retries", "0", "docker://"+ln.Addr().String()+"/stalled/img:v1").CombinedOutput()
	took := time.Since(start)
	if err == nil {
		t.Fatalf("cat from a stalled registry succeeded: %s", out)
	}
	if took > 20*time.Second {
		t.Errorf("a stalled registry held cat for %v with --registry-timeout 1s", took)
	}
	if !strings.Contains(string(out), ln.Addr().String()) || !strings.Contains(strings.ToLower(string(out)), "timeout") && !strings.Contains(string(out), "deadline") {
		t.Errorf("error does not name the registry and the timeout:\n%s", out)
	}
	t.Logf("failed after %v: %s", took.Round(time.Millisecond), strings.TrimSpace(string(out)))
}

// --readahead-kb -1 (leave the kernel's value, as documented) and a
// negative value written either way parse; other negatives are refused.
func TestReadaheadFlag(t *testing.T) {
	for _, args := range [][]string{{"--readahead-kb", "-1"}, {"--readahead-kb=-1"}} {
		cmd := exec.Command(obdfsBin, append([]string{"mount", "--help"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%v: %v\n%s", args, err, out)
		}
	}
}
