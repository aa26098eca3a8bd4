package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/obdfs/obdfs/server"
)

func init() { register(&statsCmds{}) }

type statsCmds struct {
	Stats statsCmd `cmd:"" help:"Print per-stack and per-layer I/O and cache counters of a mount."`
}

type statsCmd struct {
	JSON       bool   `name:"json" help:"Print JSON."`
	Mountpoint string `arg:"" name:"MOUNTPOINT" type:"path"`
}

func (c *statsCmd) Run() error {
	resp, err := call(c.Mountpoint, server.Request{Op: "stats"})
	if err != nil {
		return err
	}
	if c.JSON {
		e := json.NewEncoder(os.Stdout)
		e.SetIndent("", "  ")
		return e.Encode(struct {
			Stacks []server.StackInfo `json:"stacks"`
			Cache  *server.CacheInfo  `json:"cache,omitempty"`
		}{resp.Stacks, resp.Cache})
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STACK/LAYER\tREADS\tBYTES SERVED\tWRITES\tBYTES WRITTEN\tERRORS\tCACHE HITS\tCACHE MISSES\tBACKING READS\tBACKING BYTES\tKIND\t")
	for _, s := range resp.Stacks {
		var hits, misses, breads, bbytes int64
		for _, l := range s.Layers {
			hits += l.CacheHits
			misses += l.CacheMisses
			breads += l.BackingReads
			bbytes += l.BackingBytes
		}
		st := s.Stats
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t\n",
			s.Name, st.Reads, st.ReadBytes, st.Writes, st.WriteBytes, st.Errors, hits, misses, breads, bbytes, "stack")
		for _, l := range s.Layers {
			fmt.Fprintf(tw, "  %s\t\t\t\t\t\t%d\t%d\t%d\t%d\t%s\t\n",
				l.Name, l.CacheHits, l.CacheMisses, l.BackingReads, l.BackingBytes, l.Kind)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := printFetchStats(resp.Stacks); err != nil {
		return err
	}
	if resp.Cache != nil {
		fmt.Printf("block cache: %d of %d bytes\n", resp.Cache.Bytes, resp.Cache.MaxBytes)
	}
	return nil
}

// printFetchStats prints the registry counters of the lazily read layers,
// if any: what was fetched, how, and the background download's progress.
func printFetchStats(stacks []server.StackInfo) error {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	header := false
	for _, s := range stacks {
		for _, l := range s.Layers {
			f := l.Fetch
			if f == nil {
				continue
			}
			if !header {
				fmt.Fprintln(tw, "\nREGISTRY LAYER\tSIZE\tCACHED\tFETCHED\tGETS\tAHEAD GETS\tAHEAD BYTES\tAHEAD HITS\tBACKGROUND BYTES\tBACKGROUND\tVERIFIED\t")
				header = true
			}
			bg := f.Background
			if bg == "" {
				bg = "off"
			}
			fmt.Fprintf(tw, "%s/%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%v\t\n", s.Name, l.Name, f.Size, f.Cached, f.FetchedBytes,
				f.Fetches, f.AheadFetches, f.AheadBytes, f.AheadHits, f.BackgroundBytes, bg, f.Verified)
		}
	}
	return tw.Flush()
}
