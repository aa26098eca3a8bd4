package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/obdfs/obdfs/internal/fixture"

	"github.com/obdfs/obdfs/internal/testlayer"
)

// The CLI tests run the real binary, built once for the package.
var obdfsBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "obdfs-cli")
	if err != nil {
		panic(err)
	}
	obdfsBin = filepath.Join(dir, "obdfs")
	if out, err := exec.Command("go", "build", "-o", obdfsBin, ".").CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		os.RemoveAll(dir)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func needFixtures(t *testing.T) string {
	t.Helper()
	// testdata/oracle: the tests name files as "d/l3.lsmt", "a/base.lsmt".
	return filepath.Dir(filepath.Dir(fixture.Oracle(t, "d/l1.lsmt")))
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(obdfsBin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("obdfs %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func runFail(t *testing.T, want string, args ...string) {
	t.Helper()
	out, err := exec.Command(obdfsBin, args...).CombinedOutput()
	if err == nil {
		t.Fatalf("obdfs %s succeeded:\n%s", strings.Join(args, " "), out)
	}
	if !strings.Contains(string(out), want) {
		t.Fatalf("obdfs %s: output does not mention %q:\n%s", strings.Join(args, " "), want, out)
	}
}

func sha(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

const (
	sumL1    = "3a8114c638a5bd9111d70a534daf9e37128b775614357a32ef389785f434d81f"
	sumL3    = "1a4f46de871efe56314c353cd3f692cfbdc5413a7e95f97d610761379b7fda20"
	sumStack = "b2315973658f86ec78a1431df439b451b12dd0bad74a39dfd3de10087d63b4e7"
)

// Committing the fixture's writable layer reproduces overlaybd-commit's
// output byte for byte.
func TestCommitReproducesOverlaybd(t *testing.T) {
	fx := needFixtures(t)
	dir := t.TempDir()
	data, index := testlayer.CopyRW(t, dir)
	out := filepath.Join(dir, "l3.lsmt")
	run(t, "commit", "--uuid", "0bd00003-0000-4000-8000-000000000003",
		"-p", "0bd00002-0000-4000-8000-000000000002", data, index, out)
	if got, want := sha(t, out), sha(t, filepath.Join(fx, "d/l3.lsmt")); got != want {
		t.Fatalf("commit output sha256 %s, overlaybd-commit wrote %s", got, want)
	}
	runFail(t, "exists", "commit", data, index, out)
	run(t, "commit", "-f", data, index, out)
}

// Every container combination commit writes reads back to the same disk,
// alone and stacked, and `info` describes it.
func TestCommitContainers(t *testing.T) {
	fx := needFixtures(t)
	dir := t.TempDir()
	data, index := testlayer.CopyRW(t, dir)
	tests := []struct {
		name  string
		flags []string
		kind  string
	}{
		{"raw", nil, "lsmt read-only layer"},
		{"lz4", []string{"-z"}, "zfile+lsmt"},
		{"zstd16k", []string{"-z", "--algorithm", "zstd", "--bs", "16"}, "zfile+lsmt"},
		{"lz4tar", []string{"-z", "-t"}, "tar+zfile+lsmt"},
		{"rawtar", []string{"-t"}, "tar+lsmt"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, tc.name+".commit")
			args := append([]string{"commit", "--uuid", "0bd00003-0000-4000-8000-000000000003", "-m", "msg " + tc.name}, tc.flags...)
			run(t, append(args, data, index, out)...)
			alone := filepath.Join(dir, tc.name+".raw")
			run(t, "cat", "-o", alone, out)
			if got := sha(t, alone); got != sumL3 {
				t.Fatalf("alone: %s", got)
			}
			stacked := filepath.Join(dir, tc.name+".stack.raw")
			run(t, "cat", "-o", stacked, fx+"/d/l1.lsmt,"+fx+"/d/l2.lsmt,"+out)
			if got := sha(t, stacked); got != sumStack {
				t.Fatalf("stacked: %s", got)
			}
			info := run(t, "info", out)
			for _, want := range []string{tc.kind, "0BD00003-0000-4000-8000-000000000003", "msg " + tc.name} {
				if !strings.Contains(info, want) {
					t.Fatalf("info lacks %q:\n%s", want, info)
				}
			}
		})
	}
}

func TestCatSparseAndRanges(t *testing.T) {
	fx := needFixtures(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "disk.raw")
	run(t, "cat", "-o", out, fx+"/b/base.lz4.zfile")
	if got := sha(t, out); got != sumL1 {
		t.Fatalf("sha256 %s", got)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(out, &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != 64<<20 || st.Blocks*512 >= st.Size/4 {
		t.Fatalf("output not sparse: size %d, allocated %d", st.Size, st.Blocks*512)
	}
	whole, _ := os.ReadFile(out)
	part := run(t, "cat", "--offset", "1048576", "--length", "1000", fx+"/a/base.lsmt")
	if !bytes.Equal([]byte(part), whole[1<<20:1<<20+1000]) {
		t.Fatal("ranged cat differs")
	}
	runFail(t, "past", "cat", "--offset", "67108000", "--length", "1000", fx+"/a/base.lsmt")
}

func TestZFileCommand(t *testing.T) {
	fx := needFixtures(t)
	dir := t.TempDir()
	src := filepath.Join(fx, "a/base.lsmt")
	for _, alg := range []string{"lz4", "zstd"} {
		z := filepath.Join(dir, alg+".zfile")
		run(t, "zfile", "--algorithm", alg, "-t", src, z)
		if out := run(t, "zfile", "--verify", z); !strings.Contains(out, "ok") {
			t.Fatalf("verify: %s", out)
		}
		x := filepath.Join(dir, alg+".x")
		run(t, "zfile", "-x", z, x)
		if sha(t, x) != sha(t, src) {
			t.Fatal("zfile -x does not give back the source")
		}
		// A flipped byte inside the compressed data fails verification.
		b, _ := os.ReadFile(z)
		b[1536+512+100] ^= 0xFF
		bad := filepath.Join(dir, alg+".bad")
		os.WriteFile(bad, b, 0o644)
		runFail(t, "block", "zfile", "--verify", bad)
	}
	runFail(t, "--bs", "zfile", "--bs", "128", src, filepath.Join(dir, "x"))
}

func TestCreate(t *testing.T) {
	dir := t.TempDir()
	data, index := filepath.Join(dir, "d"), filepath.Join(dir, "i")
	run(t, "create", "-u", "0bd00002-0000-4000-8000-000000000002", data, index, "1")
	info := run(t, "info", data, index)
	for _, want := range []string{"writable layer data file", "writable layer index file", "1073741824", "0BD00002-0000-4000-8000-000000000002"} {
		if !strings.Contains(info, want) {
			t.Fatalf("info lacks %q:\n%s", want, info)
		}
	}
	runFail(t, "exist", "create", data, index, "1")
	runFail(t, "512", "create", "--size", "1000", data+"2", index+"2")
}

// create -s makes an overlaybd sparse layer: a data file with flags 0x13
// sized header + vsize, and an empty index file; it commits like any layer.
func TestCreateSparse(t *testing.T) {
	dir := t.TempDir()
	data, index := filepath.Join(dir, "d"), filepath.Join(dir, "i")
	run(t, "create", "-s", "-u", "0bd00002-0000-4000-8000-000000000002", data, index, "1")
	info := run(t, "info", data)
	for _, want := range []string{"sparse writable layer data file", "flags 0x13", "1073741824", "0BD00002-0000-4000-8000-000000000002"} {
		if !strings.Contains(info, want) {
			t.Fatalf("info lacks %q:\n%s", want, info)
		}
	}
	if st, err := os.Stat(data); err != nil || st.Size() != 4096+1<<30 {
		t.Fatalf("data file: %v %v", st, err)
	}
	if st, err := os.Stat(index); err != nil || st.Size() != 0 {
		t.Fatalf("index file: %v %v", st, err)
	}
	out := filepath.Join(dir, "c")
	run(t, "commit", data, index, out)
	if info := run(t, "info", out); !strings.Contains(info, "read-only layer") || !strings.Contains(info, "1073741824") {
		t.Fatalf("committed sparse layer:\n%s", info)
	}
	runFail(t, "exist", "create", "-s", data, index+"2", "1")
}

func TestHelp(t *testing.T) {
	out := run(t, "--help")
	for _, cmd := range []string{"create", "commit", "zfile", "info", "cat"} {
		if !strings.Contains(out, cmd) {
			t.Fatalf("--help lacks %s", cmd)
		}
		run(t, cmd, "--help")
	}
}

func TestInfoErrors(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "junk")
	os.WriteFile(p, bytes.Repeat([]byte{7}, 10000), 0o644)
	runFail(t, "not an overlaybd file", "info", p)
}

// merge flattens a stack into one layer with the same content, compressed
// by default, and the result opens alone.
func TestMerge(t *testing.T) {
	fx := needFixtures(t)
	dir := t.TempDir()
	stack := fx + "/d/l1.lsmt," + fx + "/d/l2.lsmt," + fx + "/d/l3.lsmt"
	for _, tc := range []struct {
		name  string
		flags []string
		kind  string
	}{
		{"default", nil, "zfile+lsmt"},
		{"raw", []string{"--no-compress"}, "lsmt read-only layer"},
		{"zstd-tar", []string{"--algorithm", "zstd", "-t"}, "tar+zfile+lsmt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, tc.name+".commit")
			run(t, append(append([]string{"merge"}, tc.flags...), stack, out)...)
			raw := filepath.Join(dir, tc.name+".raw")
			run(t, "cat", "-o", raw, out)
			if got := sha(t, raw); got != sumStack {
				t.Fatalf("merged layer reads %s, want %s", got, sumStack)
			}
			if info := run(t, "info", out); !strings.Contains(info, tc.kind) {
				t.Fatalf("info lacks %q:\n%s", tc.kind, info)
			}
		})
	}
}

// A broken parent-uuid chain is refused, unless --no-order-check.
func TestOrderCheck(t *testing.T) {
	fx := needFixtures(t)
	wrong := fx + "/d/l1.lsmt," + fx + "/d/l3.lsmt"
	out := filepath.Join(t.TempDir(), "x.raw")
	runFail(t, "out of order", "cat", "-o", out, wrong)
	run(t, "cat", "--no-order-check", "-o", out, wrong)
}
