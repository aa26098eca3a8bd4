package remote

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTraceRecordReplay: ranges read from a blob are recorded in first-read
// order and saved on Close; a cold open with the trace fetches them ahead,
// so the same reads then make no GET. Ranges outside the blob are ignored.
func TestTraceRecordReplay(t *testing.T) {
	const size, chunk = 8 << 20, 64 << 10
	url, dig, data, f := randomBlob(t, size)
	path := filepath.Join(t.TempDir(), "trace.json")
	reads := [][2]int64{{5 << 20, 100}, {100, 300 << 10}, {7<<20 + 12345, 4096}, {5<<20 + 200, 10}}

	o := testOptions(t)
	o.RefillSize, o.Readahead = chunk, -1
	o.RecordTrace = NewTraceRecorder(path)
	b, err := OpenBlob(context.Background(), url, dig, size, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reads {
		if _, err := b.ReadAt(make([]byte, r[1]), r[0]); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("trace file: %v, %v", err, st)
	}
	tr, err := LoadTrace(path)
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]int64{{5 << 20, chunk}, {0, 5 * chunk}, {7<<20 + 12288/chunk*chunk, chunk}}
	want[2][0] = (7<<20 + 12345) / chunk * chunk
	if got := tr.Layers[dig]; len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("recorded %v, want %v", got, want)
	}

	// Replay into a cold cache, with a bogus range past the end.
	tr.Layers[dig] = append(tr.Layers[dig], [2]int64{size, chunk})
	o2 := testOptions(t)
	o2.RefillSize, o2.Readahead, o2.Trace = chunk, -1, tr
	b2, err := OpenBlob(context.Background(), url, dig, size, o2)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	deadline := time.Now().Add(30 * time.Second)
	for b2.Stats().Replay != replayDone {
		if time.Now().After(deadline) {
			t.Fatal("replay not done in 30 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if c := b2.CachedBytes(); c != 7*chunk {
		t.Errorf("replay cached %d bytes, want the 7 traced chunks", c)
	}
	g := f.gets.Load()
	for _, r := range reads {
		p := make([]byte, r[1])
		if _, err := b2.ReadAt(p, r[0]); err != nil || !bytes.Equal(p, data[r[0]:r[0]+r[1]]) {
			t.Fatalf("read %v: %v", r, err)
		}
	}
	if n := f.gets.Load() - g; n != 0 {
		t.Errorf("the traced reads made %d GETs after the replay", n)
	}
	if st := b2.Stats(); st.AheadHits == 0 || st.AheadBytes != 7*chunk {
		t.Errorf("replay counters %+v", st)
	}
}

func TestLoadTraceErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, body, want string }{
		{"version", `{"version":7,"layers":{}}`, "version 7"},
		{"digest", `{"version":1,"layers":{"md5:00":[[0,1]]}}`, "sha256"},
		{"range", `{"version":1,"layers":{"sha256:` + strings.Repeat("0", 64) + `":[[0,0]]}}`, "not a byte range"},
		{"json", `{"version":1,`, "unexpected end"},
	} {
		p := filepath.Join(dir, tc.name+".json")
		os.WriteFile(p, []byte(tc.body), 0o600)
		_, err := LoadTrace(p)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v, want an error naming the file and %q", tc.name, err, tc.want)
		}
	}
}
