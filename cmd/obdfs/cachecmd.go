package main

import (
	"fmt"

	"github.com/obdfs/obdfs/remote"
)

func init() { register(&cacheCmds{}) }

type cacheCmds struct {
	Cache struct {
		Verify cacheVerifyCmd `cmd:"" help:"Check every cached registry blob: each chunk against the sum taken when it was fetched, each complete blob against its sha256 digest; what fails is dropped (fetched again when needed)."`
	} `cmd:"" help:"The persistent cache of registry blobs."`
}

type cacheVerifyCmd struct {
	CacheDir string `default:"/var/cache/obdfs" placeholder:"DIR" help:"Persistent cache of registry blobs."`
}

func (c *cacheVerifyCmd) Run() error {
	bad, n := 0, 0
	err := remote.VerifyCache(c.CacheDir, func(r remote.CacheCheck) {
		n++
		state := fmt.Sprintf("%s of %s cached", humanBytes(r.Present), humanBytes(r.Size))
		switch {
		case r.Verified:
			state = humanBytes(r.Size) + " complete, sha256 verified"
		case r.Err == nil && r.Damaged == 0:
			state += ", chunks match their sums"
		}
		if r.Damaged > 0 {
			state += fmt.Sprintf(", %d damaged chunks dropped", r.Damaged)
		}
		if r.Err != nil {
			state += ": " + r.Err.Error()
		}
		if r.Damaged > 0 || r.Err != nil {
			bad++
		}
		fmt.Printf("%s: %s\n", r.Digest, state)
	})
	if err != nil {
		return err
	}
	if bad > 0 {
		return fmt.Errorf("cache verify: %d of %d blobs had damage (dropped; fetched again when needed)", bad, n)
	}
	return nil
}
