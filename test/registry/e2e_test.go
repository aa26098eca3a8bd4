package registry

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/obdfs/obdfs/internal/fixture"
	"github.com/obdfs/obdfs/internal/needs"
)

var obdfsBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "obdfs-e2e")
	if err != nil {
		panic(err)
	}
	obdfsBin = filepath.Join(dir, "obdfs")
	if out, err := exec.Command("go", "build", "-o", obdfsBin, "../../cmd/obdfs").CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func obdfs(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(obdfsBin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustObdfs(t *testing.T, env []string, args ...string) string {
	t.Helper()
	out, err := obdfs(t, env, args...)
	if err != nil {
		t.Fatalf("obdfs %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

var oracle = fixture.OracleDir()

// TestPushPullCLI: obdfs push -z (compressing plain LSMT layers) to the
// htpasswd registry with credentials from a docker config, then obdfs pull
// (verified), and a second pull that fetches nothing.
func TestPushPullCLI(t *testing.T) {
	fixture.Oracle(t, "d/l1.lsmt")
	srv := Start(t, true)
	env := []string{"DOCKER_CONFIG=" + srv.DockerConfig(t)}
	ref := srv.Ref("cli/stack:v1")
	out := mustObdfs(t, env, "push", "-z", "--insecure",
		"--layer", oracle+"/d/l1.lsmt", "--layer", oracle+"/d/l2.lsmt", "--layer", oracle+"/d/l3.lsmt", ref)
	if !strings.Contains(out, "@sha256:") {
		t.Fatalf("push printed %q, want the manifest digest", out)
	}
	cache := t.TempDir()
	out = mustObdfs(t, env, "pull", "--cache-dir", cache, ref)
	if strings.Count(out, "verified") != 3 {
		t.Fatalf("pull output:\n%s", out)
	}
	out = mustObdfs(t, env, "pull", "--cache-dir", cache, ref)
	if strings.Count(out, "0 B fetched") != 3 {
		t.Fatalf("second pull fetched data:\n%s", out)
	}
	// A byte flipped in a cached blob: pull hashes again and fetches the
	// damaged chunk rather than calling the copy verified; the scrub finds
	// the next flip, drops the chunk and says so; a clean cache passes.
	blobs, _ := filepath.Glob(filepath.Join(cache, "blobs", "sha256", "*[0-9a-f]"))
	if len(blobs) != 3 {
		t.Fatalf("cached blobs %v", blobs)
	}
	flip := func() {
		f, err := os.OpenFile(blobs[0], os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		var c [1]byte
		f.ReadAt(c[:], 5000)
		f.WriteAt([]byte{c[0] ^ 1}, 5000)
		f.Close()
	}
	flip()
	out = mustObdfs(t, env, "pull", "--cache-dir", cache, ref)
	if strings.Count(out, "sha256 verified") != 3 || !strings.Contains(out, "1 damaged cached chunks fetched again") || strings.Count(out, "0 B fetched") != 2 {
		t.Fatalf("pull over a damaged cache:\n%s", out)
	}
	flip()
	if out, err := obdfs(t, nil, "cache", "verify", "--cache-dir", cache); err == nil || !strings.Contains(out, "1 damaged chunks dropped") || strings.Count(out, "sha256 verified") != 2 {
		t.Fatalf("cache verify of a damaged cache: %v\n%s", err, out)
	}
	if out := mustObdfs(t, nil, "cache", "verify", "--cache-dir", cache); strings.Count(out, "chunks match their sums") != 1 || strings.Count(out, "sha256 verified") != 2 {
		t.Fatalf("cache verify after the drop:\n%s", out)
	}
	// Without credentials the registry refuses, with a clear message.
	out, err := obdfs(t, []string{"DOCKER_CONFIG=" + t.TempDir()}, "pull", "--cache-dir", t.TempDir(), ref)
	if err == nil || !strings.Contains(strings.ToUpper(out), "UNAUTHORIZED") {
		t.Fatalf("anonymous pull: err %v, output:\n%s", err, out)
	}
}

// TestMountDockerExt4 is the end-to-end path: an ext4 image built into an
// overlaybd layer, pushed, served by `obdfs mount` from docker:// lazily,
// read through FUSE → loop → ext4 and compared with its source tree; then the
// daemon is restarted with the registry stopped and the files read again from
// the cache.
func TestMountDockerExt4(t *testing.T) {
	needs.Root(t, "FUSE mount, loop device and ext4 mount")
	needs.Device(t, "/dev/fuse", "FUSE")
	needs.Commands(t, "mkfs.ext4", "mount", "umount")
	srv := Start(t, true)
	env := []string{"DOCKER_CONFIG=" + srv.DockerConfig(t)}
	w := t.TempDir()
	src, mnt, fsdir := filepath.Join(w, "src"), filepath.Join(w, "mnt"), filepath.Join(w, "fs")
	for _, d := range []string{src + "/etc", src + "/data", mnt, fsdir} {
		os.MkdirAll(d, 0o755)
	}
	os.WriteFile(src+"/etc/hello.txt", []byte("hello from a registry\n"), 0o644)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<17) // 2 MiB
	for i := range big {
		big[i] ^= byte(i * 7)
	}
	os.WriteFile(src+"/data/big.bin", big, 0o644)
	img := filepath.Join(w, "base.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", src, img, "32M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	// Write the ext4 image into a fresh writable layer through FUSE, commit it.
	mustObdfs(t, nil, "create", w+"/l1.data", w+"/l1.index", "--size", "33554432")
	os.WriteFile(w+"/l1.json", []byte(`{"upper":{"data":"l1.data","index":"l1.index"}}`), 0o644)
	mustObdfs(t, nil, "mount", mnt, "l1="+w+"/l1.json")
	if out, err := exec.Command("dd", "if="+img, "of="+mnt+"/l1", "bs=1M", "conv=notrunc,sparse,fsync", "status=none").CombinedOutput(); err != nil {
		obdfs(t, nil, "umount", mnt)
		t.Fatalf("dd: %v\n%s", err, out)
	}
	mustObdfs(t, nil, "umount", mnt)
	mustObdfs(t, nil, "commit", w+"/l1.data", w+"/l1.index", w+"/l1.commit")
	ref := srv.Ref("e2e/ext4:v1")
	mustObdfs(t, env, "push", "-z", "--layer", w+"/l1.commit", ref)

	cache := t.TempDir()
	check := func(what string) {
		t.Helper()
		mustObdfs(t, env, "mount", "--cache-dir", cache, mnt, "img="+ref)
		defer obdfs(t, nil, "umount", mnt)
		out, err := exec.Command(obdfsBin, "loop", "attach", mnt+"/img").Output() // stdout: the device
		if err != nil {
			t.Fatalf("%s: loop attach: %v", what, err)
		}
		loop := strings.TrimSpace(string(out))
		defer obdfs(t, nil, "loop", "detach", "--backing", mnt+"/img", loop)
		if out, err := exec.Command("mount", "-o", "ro", "-t", "ext4", loop, fsdir).CombinedOutput(); err != nil {
			t.Fatalf("%s: mount ext4: %v\n%s", what, err, out)
		}
		defer exec.Command("umount", fsdir).Run()
		for _, f := range []string{"etc/hello.txt", "data/big.bin"} {
			want, _ := os.ReadFile(filepath.Join(src, f))
			got, err := os.ReadFile(filepath.Join(fsdir, f))
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s: %s differs (err %v)", what, f, err)
			}
		}
	}
	check("lazy from the registry")
	srv.Stop()
	check("from the cache, registry stopped")
}

// TestPullCLIEmulated: obdfs pull from a registry that behaves like the
// hosted ones (bearer tokens from a separate token server that expire every
// few requests, credentials from a docker config, blob GETs redirected to
// an object store that refuses Authorization, one 429 with Retry-After).
func TestPullCLIEmulated(t *testing.T) {
	fixture.Oracle(t, "d/l1.lsmt")
	e := Emulate(t)
	mustObdfs(t, nil, "push", "-z", "--insecure",
		"--layer", oracle+"/d/l1.lsmt", "--layer", oracle+"/d/l2.lsmt", e.DirectRef("cli/stack:v1"))
	e.Configure(func(c *EmulatorConfig) {
		c.User, c.Password, c.TokenUses, c.Redirect = "obdfs", "pw", 2, true
	})
	e.RateLimit(1, "1")
	env := []string{"DOCKER_CONFIG=" + e.DockerConfig(t, "obdfs", "pw")}
	out := mustObdfs(t, env, "pull", "--cache-dir", t.TempDir(), e.Ref("cli/stack:v1"))
	if strings.Count(out, "verified") != 2 {
		t.Fatalf("pull output:\n%s", out)
	}
	if e.StoreAuthSeen.Load() != 0 || e.Redirects.Load() == 0 || e.TooMany.Load() == 0 || e.TooEarly.Load() != 0 {
		t.Errorf("object store saw Authorization %d times; redirects %d; 429s %d; requests before Retry-After %d",
			e.StoreAuthSeen.Load(), e.Redirects.Load(), e.TooMany.Load(), e.TooEarly.Load())
	}
}

// TestOverlaybdConfigCLI: obdfs pull with overlaybd's service config as its
// only configuration: the credential file of credentialConfig (no docker
// config) opens the htpasswd registry, the blobs land in cacheConfig's
// cacheDir (its obdfs/ subdirectory), keys without an obdfs meaning are reported once; a flag given
// on the command line wins over the file.
func TestOverlaybdConfigCLI(t *testing.T) {
	fixture.Oracle(t, "d/l1.lsmt")
	srv := Start(t, true)
	ref := srv.Ref("cli/conf:v1")
	mustObdfs(t, []string{"DOCKER_CONFIG=" + srv.DockerConfig(t)}, "push", "--insecure", "--layer", oracle+"/d/l1.lsmt", ref)
	dir := t.TempDir()
	cred := filepath.Join(dir, "cred.json")
	enc := base64.StdEncoding.EncodeToString([]byte(srv.User + ":" + srv.Password))
	if err := os.WriteFile(cred, []byte(`{"auths": {"`+srv.Host+`/cli": {"auth": "`+enc+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(dir, "registry_cache")
	conf := filepath.Join(dir, "overlaybd.json")
	if err := os.WriteFile(conf, []byte(`{
  "cacheConfig": {"cacheType": "file", "cacheDir": "`+cache+`", "cacheSizeGB": 1},
  "credentialConfig": {"mode": "file", "path": "`+cred+`"},
  "enableAudit": true,
  "gzipCacheConfig": {"enable": true}
}`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"DOCKER_CONFIG=" + t.TempDir()} // no credentials there
	out := mustObdfs(t, env, "pull", "--config", conf, ref)
	if !strings.Contains(out, "verified") {
		t.Fatalf("pull output:\n%s", out)
	}
	if ents, err := os.ReadDir(filepath.Join(cache, "obdfs", "blobs", "sha256")); err != nil || len(ents) == 0 {
		t.Errorf("nothing in cacheConfig.cacheDir %s: %v", cache, err)
	}
	if !strings.Contains(out, "enableAudit (no obdfs meaning)") || strings.Count(out, "without an obdfs meaning") != 1 {
		t.Errorf("ignored keys not reported once:\n%s", out)
	}
	// --cache-dir given: it wins.
	flagCache := t.TempDir()
	mustObdfs(t, env, "pull", "--config", conf, "--cache-dir", flagCache, ref)
	if ents, err := os.ReadDir(filepath.Join(flagCache, "blobs", "sha256")); err != nil || len(ents) == 0 {
		t.Errorf("--cache-dir did not win over the config: %v", err)
	}
	// Without the config the registry refuses; a missing --config is an error.
	if out, err := obdfs(t, env, "pull", "--config", "", "--cache-dir", t.TempDir(), ref); err == nil {
		t.Fatalf("pull without credentials succeeded:\n%s", out)
	}
	if out, err := obdfs(t, env, "pull", "--config", filepath.Join(dir, "none.json"), ref); err == nil || !strings.Contains(out, "none.json") {
		t.Fatalf("missing --config: %v\n%s", err, out)
	}
}

// TestMountDamagedCache: a byte flipped in a cached raw LSMT blob (no CRC
// of its own) is not served after a remount: the damaged chunk fails the
// sum taken when it was fetched and is fetched again, so the disk reads the
// same as before the damage.
func TestMountDamagedCache(t *testing.T) {
	needs.FUSE(t)
	fixture.Oracle(t, "d/l1.lsmt")
	srv := Start(t, true)
	env := []string{"DOCKER_CONFIG=" + srv.DockerConfig(t)}
	ref := srv.Ref("damage/raw:v1")
	mustObdfs(t, env, "push", "--layer", oracle+"/d/l1.lsmt", ref) // raw, not -z
	cache, mnt := t.TempDir(), filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(mnt, 0o755)
	sum := func() string {
		t.Helper()
		mustObdfs(t, env, "mount", "--cache-dir", cache, mnt, "img="+ref)
		defer obdfs(t, nil, "umount", mnt)
		b, err := os.ReadFile(filepath.Join(mnt, "img"))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.Sum256(b)
		return hex.EncodeToString(h[:])
	}
	want := sum()
	blobs, _ := filepath.Glob(filepath.Join(cache, "blobs", "sha256", "*[0-9a-f]"))
	if len(blobs) != 1 {
		t.Fatalf("cached blobs %v", blobs)
	}
	st, _ := os.Stat(blobs[0])
	f, err := os.OpenFile(blobs[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for off := int64(8192); off < st.Size()-8192; off += 300_000 { // in the data, in several chunks
		var c [1]byte
		f.ReadAt(c[:], off)
		f.WriteAt([]byte{c[0] ^ 0x80}, off)
	}
	f.Close()
	if got := sum(); got != want {
		t.Fatalf("after damage to the cache the disk reads sha256 %s, was %s", got, want)
	}
}
