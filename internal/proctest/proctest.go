// Package proctest runs a helper program under a test (docker-registry,
// tinyproxy, Prometheus): started, watched for an early exit, and stopped
// with an interrupt, killed if it does not end in time.
package proctest

import (
	"os"
	"os/exec"
	"time"
)

// Proc is a started helper program.
type Proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start starts cmd. Its Stdout and Stderr, when files, may be closed once
// Start returns (the program has its own descriptors).
func Start(cmd *exec.Cmd) (*Proc, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Proc{cmd: cmd, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(p.exited) }()
	return p, nil
}

// Exited is closed once the program has exited and been waited for.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Stop interrupts the program and waits for it to exit, killing it if it
// has not after grace.
func (p *Proc) Stop(grace time.Duration) {
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.exited
	}
}
