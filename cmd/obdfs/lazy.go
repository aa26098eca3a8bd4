package main

import (
	"fmt"
	"time"

	"github.com/alecthomas/kong"

	"github.com/obdfs/obdfs/remote"
	"github.com/obdfs/obdfs/server"
)

// lazyFlags tune how registry layers are read lazily: readahead, background
// download (an image config's `download` block overrides the latter), trace
// record and replay. mount sets them for the daemon; stack add for one
// stack, over the daemon's.
type lazyFlags struct {
	Readahead       string        `default:"32MiB" placeholder:"SIZE" help:"Largest readahead window of a sequential reader of a registry layer (0: no readahead)."`
	Background      bool          `help:"Download the rest of every registry layer in use into the blob cache in the background (verified against its digest, resumed after a restart)."`
	BackgroundDelay time.Duration `default:"0s" placeholder:"DURATION" help:"Wait this long after a layer is opened before its background download starts."`
	BackgroundRate  string        `default:"0" placeholder:"SIZE" help:"Bound of the background download rate per second, shared by every stack with the same bound, e.g. 20MiB (0: none)."`
	RecordTrace     string        `placeholder:"FILE" type:"path" help:"Record the ranges read from registry layers (by layer digest) into FILE, written when a stack is closed."`
	Trace           string        `placeholder:"FILE" type:"path" help:"Replay a trace recorded with --record-trace: fetch its ranges of every layer it names ahead of the readers."`
}

func (f lazyFlags) apply(o *remote.Options) error {
	l, err := f.options(func(string) bool { return true })
	if err != nil {
		return err
	}
	return applyLazy(o, l)
}

// options are the settings of the flags for which given(name) is true.
func (f lazyFlags) options(given func(name string) bool) (server.LazyOptions, error) {
	var l server.LazyOptions
	if given("readahead") {
		ra, err := parseSize(f.Readahead)
		if err != nil {
			return l, fmt.Errorf("--readahead: %w", err)
		}
		l.Readahead = &ra
	}
	if given("background") {
		l.Background = &f.Background
	}
	if given("background-delay") {
		if f.BackgroundDelay < 0 {
			return l, fmt.Errorf("--background-delay %s is negative", f.BackgroundDelay)
		}
		l.BackgroundDelay = &f.BackgroundDelay
	}
	if given("background-rate") {
		rate, err := parseSize(f.BackgroundRate)
		if err != nil {
			return l, fmt.Errorf("--background-rate: %w", err)
		}
		l.BackgroundRate = &rate
	}
	if given("record-trace") {
		l.RecordTrace = &f.RecordTrace
	}
	if given("trace") {
		l.Trace = &f.Trace
	}
	return l, nil
}

// givenFlags reports the flags named on the command line (not defaulted).
func givenFlags(ctx *kong.Context) func(string) bool {
	given := map[string]bool{}
	for _, p := range ctx.Path {
		if p.Flag != nil {
			given[p.Flag.Name] = true
		}
	}
	return func(name string) bool { return given[name] }
}

// applyLazy puts the set fields of l into o.
func applyLazy(o *remote.Options, l server.LazyOptions) error {
	if l.Readahead != nil {
		o.Readahead = *l.Readahead
		if o.Readahead == 0 {
			o.Readahead = -1 // remote.Options: 0 means the default
		}
	}
	if l.Background != nil {
		o.Background.Enable = *l.Background
	}
	if l.BackgroundDelay != nil {
		o.Background.Delay = *l.BackgroundDelay
	}
	if l.BackgroundRate != nil {
		o.Background.MaxBytesPerSec = *l.BackgroundRate
	}
	if l.RecordTrace != nil {
		o.RecordTrace = nil
		if *l.RecordTrace != "" {
			o.RecordTrace = remote.TraceRecorderFor(*l.RecordTrace)
		}
	}
	if l.Trace != nil {
		o.Trace = nil
		if *l.Trace != "" {
			t, err := remote.LoadTrace(*l.Trace)
			if err != nil {
				return err
			}
			o.Trace = t
		}
	}
	return nil
}
