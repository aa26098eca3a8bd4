package image

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/obdfs/obdfs/internal/fixture"

	"github.com/obdfs/obdfs/blockcache"

	"github.com/obdfs/obdfs/internal/testlayer"
)

var fixtures = fixture.OracleDir()

func needFixtures(t testing.TB) {
	t.Helper()
	fixture.Oracle(t, "d/l1.lsmt")
}

func sumDisk(t testing.TB, s *Stack) string {
	t.Helper()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, io.NewSectionReader(s, 0, s.Size()), make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

const (
	sumL1    = "3a8114c638a5bd9111d70a534daf9e37128b775614357a32ef389785f434d81f"
	sumL3    = "1a4f46de871efe56314c353cd3f692cfbdc5413a7e95f97d610761379b7fda20"
	sumL12   = "8d604efb09c218d305275b75b9796e1995ed93b54cad0d862cb134ac5b4dbf24"
	sumStack = "b2315973658f86ec78a1431df439b451b12dd0bad74a39dfd3de10087d63b4e7"
)

// Every oracle layer file and stack opens through Open and reads to the
// content the fixtures' README gives.
func TestFixtureStacks(t *testing.T) {
	needFixtures(t)
	tests := []struct{ spec, want string }{
		{"a/base.lsmt", sumL1},
		{"b/base.lz4.zfile", sumL1},
		{"b/base.lz4.tool.zfile", sumL1},
		{"c/base.zstd.zfile", sumL1},
		{"c/base.zstd.tool.zfile", sumL1},
		{"d/l1.lsmt,d/l2.lsmt", sumL12},
		{"d/l1.lsmt,d/l2.lsmt,d/l3.lsmt", sumStack},
		{"b/base.lz4.zfile,d/l2.lsmt,d/l3.lsmt", sumStack},
		{"d/l3.lsmt", sumL3},
	}
	for _, tc := range tests {
		t.Run(tc.spec, func(t *testing.T) {
			var parts []string
			for _, p := range strings.Split(tc.spec, ",") {
				parts = append(parts, filepath.Join(fixtures, p))
			}
			s, err := Open(strings.Join(parts, ","), Options{Cache: blockcache.New(8 << 20), NoOrderCheck: true})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if s.Size() != 64<<20 || !s.ReadOnly() {
				t.Fatalf("size %d readonly %v", s.Size(), s.ReadOnly())
			}
			if got := sumDisk(t, s); got != tc.want {
				t.Fatalf("sha256 %s, want %s", got, tc.want)
			}
		})
	}
}

// The e/ writable layer stacked on d/l1+d/l2 through a config gives the
// 3-layer content, and writes go to a copy of it.
func TestConfigWithUpper(t *testing.T) {
	needFixtures(t)
	dir := t.TempDir()
	testlayer.CopyRW(t, dir)
	abs, _ := filepath.Abs(fixtures)
	cfg := `{"lowers":[{"file":"` + abs + `/d/l1.lsmt"},{"file":"` + abs + `/d/l2.lsmt"}],
	         "upper":{"data":"l3.data","index":"l3.index"},"resultFile":"ignored"}`
	cfgPath := filepath.Join(dir, "config.v1.json")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Open(cfgPath, Options{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	if s.ReadOnly() {
		t.Fatal("stack with an upper is read-only")
	}
	if got := sumDisk(t, s); got != sumStack {
		t.Fatalf("sha256 %s, want %s", got, sumStack)
	}
	if n := len(s.Layers()); n != 3 {
		t.Fatalf("%d layers", n)
	}
	msg := []byte("written through the stack")
	buf := make([]byte, 4096)
	copy(buf, msg)
	if _, err := s.WriteAt(buf, 5<<20); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(cfgPath, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := make([]byte, len(msg))
	if _, err := s.ReadAt(got, 5<<20); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("after reopen: %q, %v", got, err)
	}
}

// Two stacks sharing a compressed bottom layer through one cache read the
// layer's backing bytes once.
func TestSharedCacheReadsBackingOnce(t *testing.T) {
	needFixtures(t)
	cache := blockcache.New(256 << 20)
	l1 := filepath.Join(fixtures, "b/base.lz4.zfile")
	a, err := Open(l1+","+filepath.Join(fixtures, "d/l2.lsmt"), Options{Cache: cache, NoOrderCheck: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(l1+","+filepath.Join(fixtures, "d/l2.lsmt")+","+filepath.Join(fixtures, "d/l3.lsmt"), Options{Cache: cache, NoOrderCheck: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	sumDisk(t, a)
	first := a.Layers()[0].BackingBytes + b.Layers()[0].BackingBytes
	if got := sumDisk(t, b); got != sumStack {
		t.Fatalf("stack b: %s", got)
	}
	second := a.Layers()[0].BackingBytes + b.Layers()[0].BackingBytes
	// Stack b may read only the ZFile index/header on open (already counted
	// in first); no data block of the shared layer may be read again.
	if second != first {
		t.Fatalf("shared layer backing bytes: %d after first stack, %d after second", first, second)
	}
	if b.Layers()[0].CacheHits == 0 {
		t.Fatal("second stack had no cache hits")
	}
}

// The official 2021 base layer (ZFile with garbage in reserved fields) opens
// and is an ext4 filesystem of 64 GiB.
func TestRealBaseLayer(t *testing.T) {
	layer := filepath.Join(t.TempDir(), "ext4_64")
	if err := os.WriteFile(layer, realBaseLayer(t), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Open(layer, Options{Cache: blockcache.New(16 << 20)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Size() != 64<<30 {
		t.Fatalf("size %d", s.Size())
	}
	sb := make([]byte, 1024)
	if _, err := s.ReadAt(sb, 1024); err != nil {
		t.Fatal(err)
	}
	if sb[0x38] != 0x53 || sb[0x39] != 0xEF {
		t.Fatalf("no ext4 superblock magic: % x", sb[0x38:0x3a])
	}
	if l := s.Layers()[0]; l.Kind != "zfile+lsmt" {
		t.Fatalf("kind %q", l.Kind)
	}
}

func TestBadSpecs(t *testing.T) {
	needFixtures(t)
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, bytes.Repeat([]byte("x"), 8192), 0o644)
	badJSON := filepath.Join(dir, "bad.json")
	os.WriteFile(badJSON, []byte(`{"lowers":[{"file":1}]}`), 0o644)
	tests := []struct{ spec, want string }{
		{"", "empty"},
		{"/nonexistent/layer", "no such file"},
		{garbage, "not an overlaybd layer"},
		{badJSON, "image config"},
		{filepath.Join(dir, "missing.json"), "no such file"},
		{"foo://bar", "unknown scheme"},
		{fixtures + "/d/l1.lsmt,," + fixtures + "/d/l2.lsmt", "empty layer"},
		// l3's parent is l2, not l1.
		{fixtures + "/d/l1.lsmt," + fixtures + "/d/l3.lsmt", "parent"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			s, err := Open(tc.spec, Options{})
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) succeeded", tc.spec)
			}
			if !strings.Contains(strings.ToLower(err.Error()), tc.want) {
				t.Fatalf("Open(%q): %v; want it to mention %q", tc.spec, err, tc.want)
			}
		})
	}
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name, json string
		ok         bool
	}{
		{"lowers", `{"lowers":[{"file":"a"},{"dir":"b"}]}`, true},
		{"remote", `{"repoBlobUrl":"https://r/v2/x/blobs","lowers":[{"digest":"sha256:ab","size":3,"dir":"/d"}]}`, true},
		{"upper only", `{"upper":{"index":"i","data":"d"}}`, true},
		{"unknown keys", `{"lowers":[{"file":"a"}],"accelerationLayer":true,"download":{"enable":false}}`, true},
		{"download", `{"lowers":[{"file":"a"}],"download":{"enable":true,"delay":120,"maxMBps":100}}`, true},
		{"download negative delay", `{"lowers":[{"file":"a"}],"download":{"enable":true,"delay":-1}}`, false},
		{"download bad rate", `{"lowers":[{"file":"a"}],"download":{"enable":true,"maxMBps":"fast"}}`, false},
		{"empty", `{}`, false},
		{"half upper", `{"lowers":[{"file":"a"}],"upper":{"data":"d"}}`, false},
		{"turbo", `{"lowers":[{"file":"a","targetFile":"t"}]}`, false},
		{"bad digest", `{"lowers":[{"digest":"md5:x"}]}`, false},
		{"empty lower", `{"lowers":[{}]}`, false},
		{"trailing", `{"lowers":[{"file":"a"}]} {}`, false},
		{"not json", `lowers`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.json), "c.json")
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "c.json") {
				t.Fatalf("error does not name the file: %v", err)
			}
		})
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"lowers":[{"file":"a"},{"dir":"b"}],"upper":{"index":"i","data":"d"}}`))
	f.Add([]byte(`{"repoBlobUrl":"https://r/v2/x/blobs","lowers":[{"digest":"sha256:ab","size":3}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b, "fuzz.json")
		if err != nil {
			if c != nil {
				t.Fatal("config returned with an error")
			}
			return
		}
		if len(c.Lowers) == 0 && c.Upper.Data == "" {
			t.Fatal("accepted a config with no layers")
		}
	})
}

var _ = errors.New

func TestAbsSpec(t *testing.T) {
	wd, _ := os.Getwd()
	for _, tc := range []struct{ in, want string }{
		{"a.commit", wd + "/a.commit"},
		{"a.commit, /x/b.commit", wd + "/a.commit,/x/b.commit"},
		{"cfg/config.v1.json", wd + "/cfg/config.v1.json"},
		{"oci:img:v1", "oci:" + wd + "/img:v1"},
		{"oci:/abs/img", "oci:/abs/img"},
		{"docker://host/repo:tag", "docker://host/repo:tag"},
		{"ftp://x", "ftp://x"},
	} {
		if got, err := AbsSpec(tc.in); err != nil || got != tc.want {
			t.Errorf("AbsSpec(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := AbsSpec("a,,b"); !errors.Is(err, ErrSpec) {
		t.Errorf("empty layer name: %v", err)
	}
}
