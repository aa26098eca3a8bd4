package main

import (
	"fmt"
	"time"

	"github.com/obdfs/obdfs/remote"
)

// lazyFlags tune how registry layers are read lazily: readahead, background
// download (an image config's `download` block overrides the latter).
type lazyFlags struct {
	Readahead       string        `default:"16MiB" placeholder:"SIZE" help:"Largest readahead window of a sequential reader of a registry layer (0: no readahead)."`
	Background      bool          `help:"Download the rest of every registry layer in use into the blob cache in the background (verified against its digest, resumed after a restart)."`
	BackgroundDelay time.Duration `default:"0s" placeholder:"DURATION" help:"Wait this long after a layer is opened before its background download starts."`
	BackgroundRate  string        `default:"0" placeholder:"SIZE" help:"Bound of the background download rate per second for the process, e.g. 20MiB (0: none)."`
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
	return nil
}
