package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

type layerStats struct {
	Name         string `json:"Name"`
	Identity     string `json:"Identity"`
	BackingBytes int64  `json:"BackingBytes"`
	CacheHits    int64  `json:"CacheHits"`
	CacheMisses  int64  `json:"CacheMisses"`
}

func layerStatsOf(t *testing.T, mp string) map[string][]layerStats {
	t.Helper()
	var st struct {
		Stacks []struct {
			Name   string       `json:"name"`
			Layers []layerStats `json:"layers"`
		} `json:"stacks"`
	}
	if err := json.Unmarshal([]byte(mustObdfs(t, "stats", "--json", mp)), &st); err != nil {
		t.Fatal(err)
	}
	out := map[string][]layerStats{}
	for _, s := range st.Stacks {
		out[s.Name] = s.Layers
	}
	return out
}

// TestSharedCache: two stacks sharing a compressed bottom layer, each read
// fully, read that layer's backing bytes once, not twice.
func TestSharedCache(t *testing.T) {
	needRoot(t)
	needFixtures(t)
	base := filepath.Join(fixtures, "b/base.lz4.zfile")
	l2 := filepath.Join(fixtures, "d/l2.lsmt")

	// Reference: one stack alone.
	mp := mount(t, "a="+base)
	fileSHA(t, filepath.Join(mp, "a"))
	alone := layerStatsOf(t, mp)["a"][0].BackingBytes
	mustObdfs(t, "umount", mp)
	if alone == 0 {
		t.Fatal("no backing bytes counted for a full read")
	}

	mountAt(t, mp, "a="+base, "b="+base+","+l2)
	if got := fileSHA(t, filepath.Join(mp, "a")); got != shaBase {
		t.Errorf("a: sha256 %s", got)
	}
	if got := fileSHA(t, filepath.Join(mp, "b")); got != shaL12 {
		t.Errorf("b: sha256 %s", got)
	}
	st := layerStatsOf(t, mp)
	var total, hits int64
	for _, name := range []string{"a", "b"} {
		for _, l := range st[name] {
			if strings.HasSuffix(l.Name, "base.lz4.zfile") {
				total += l.BackingBytes
				hits = l.CacheHits
			}
		}
	}
	t.Logf("backing bytes of the shared layer: %d alone, %d for both stacks; cache hits %d", alone, total, hits)
	if total > alone+alone/4 {
		t.Errorf("shared layer read %d backing bytes for two stacks, %d for one: the cache is not shared", total, alone)
	}
	if hits == 0 {
		t.Errorf("no cache hits on the shared layer")
	}
}
