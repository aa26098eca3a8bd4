package main

import (
	"fmt"
	"time"

	"github.com/obdfs/obdfs/remote"
)

// lazyFlags tune how registry layers are read lazily: readahead, background
// download (an image config's `download` block overrides the latter), trace
// record and replay.
type lazyFlags struct {
	Readahead       string        `default:"32MiB" placeholder:"SIZE" help:"Largest readahead window of a sequential reader of a registry layer (0: no readahead)."`
	Background      bool          `help:"Download the rest of every registry layer in use into the blob cache in the background (verified against its digest, resumed after a restart)."`
	BackgroundDelay time.Duration `default:"0s" placeholder:"DURATION" help:"Wait this long after a layer is opened before its background download starts."`
	BackgroundRate  string        `default:"0" placeholder:"SIZE" help:"Bound of the background download rate per second for the process, e.g. 20MiB (0: none)."`
	RecordTrace     string        `placeholder:"FILE" type:"path" help:"Record the ranges read from registry layers (by layer digest) into FILE, written when a stack is closed."`
	Trace           string        `placeholder:"FILE" type:"path" help:"Replay a trace recorded with --record-trace: fetch its ranges of every layer it names ahead of the readers."`
}

func (f lazyFlags) apply(o *remote.Options) error {
	ra, err := parseSize(f.Readahead)
	if err != nil {
		return fmt.Errorf("--readahead: %w", err)
	}
	o.Readahead = ra
	if ra == 0 {
		o.Readahead = -1
	}
	rate, err := parseSize(f.BackgroundRate)
	if err != nil {
		return fmt.Errorf("--background-rate: %w", err)
	}
	if f.BackgroundDelay < 0 {
		return fmt.Errorf("--background-delay %s is negative", f.BackgroundDelay)
	}
	o.Background = remote.BackgroundOptions{Enable: f.Background, Delay: f.BackgroundDelay, MaxBytesPerSec: rate}
	if f.RecordTrace != "" {
		o.RecordTrace = remote.TraceRecorderFor(f.RecordTrace)
	}
	if f.Trace != "" {
		if o.Trace, err = remote.LoadTrace(f.Trace); err != nil {
			return err
		}
	}
	return nil
}
