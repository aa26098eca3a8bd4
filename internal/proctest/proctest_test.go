package proctest

import (
	"os/exec"
	"testing"
	"time"
)

func TestStartStop(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script string // sh -c
		grace  time.Duration
		code   int // exit code: 3 from the trap, -1 when killed
	}{
		{"ends on interrupt", "trap 'exit 3' INT; while :; do sleep 0.05; done", time.Minute, 3},
		{"killed after grace", "trap '' INT; while :; do sleep 0.05; done", 300 * time.Millisecond, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Start(exec.Command("sh", "-c", tc.script))
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-p.Exited():
				t.Fatal("exited before Stop")
			case <-time.After(200 * time.Millisecond):
			}
			p.Stop(tc.grace)
			select {
			case <-p.Exited():
			default:
				t.Fatal("Stop returned before the program exited")
			}
			if c := p.cmd.ProcessState.ExitCode(); c != tc.code {
				t.Errorf("exit code %d, want %d", c, tc.code)
			}
		})
	}
	if _, err := Start(exec.Command("/nonexistent/program")); err == nil {
		t.Error("Start of a missing program succeeded")
	}
}
