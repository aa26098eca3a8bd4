// Package leakcheck is test support: it checks that goroutines and file
// descriptors started by a piece of work are gone once the work is undone.
package leakcheck

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// Snapshot is the goroutine and open-fd count at one moment.
type Snapshot struct{ goroutines, fds int }

// Take records the current counts after a GC.
func Take() Snapshot {
	runtime.GC()
	return Snapshot{runtime.NumGoroutine(), openFDs()}
}

func openFDs() int {
	e, _ := os.ReadDir("/proc/self/fd")
	return len(e)
}

// Check fails t if, within a second, the counts have not come back to at
// most those of s (servers' goroutines exit asynchronously). The error
// carries every goroutine's stack.
func (s Snapshot) Check(t testing.TB) {
	t.Helper()
	var g, fd int
	for range 50 {
		if g, fd = runtime.NumGoroutine(), openFDs(); g <= s.goroutines && fd <= s.fds {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	buf := make([]byte, 1<<16)
	t.Errorf("leak: goroutines %d -> %d, fds %d -> %d\n%s", s.goroutines, g, s.fds, fd, buf[:runtime.Stack(buf, true)])
}
