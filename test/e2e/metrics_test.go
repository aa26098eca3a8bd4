package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/obdfs/obdfs/internal/needs"
	"github.com/obdfs/obdfs/internal/proctest"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startPrometheus runs Debian's prometheus on loopback scraping target
// every second and returns its address.
func startPrometheus(t *testing.T, target string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: obdfs
    static_configs:
      - targets: ["%s"]
`, target)), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("prometheus", "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr)
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := proctest.Start(cmd)
	logf.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(10 * time.Second) })
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
		select {
		case <-p.Exited():
			b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Fatalf("prometheus exited:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("prometheus not ready after 30s")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// promQuery returns the value of a PromQL expression with one result, or
// -1 when it has none.
func promQuery(t *testing.T, addr, q string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r struct {
		Status string
		Data   struct {
			Result []struct {
				Value [2]any
			}
		}
	}
	if err := json.Unmarshal(b, &r); err != nil || r.Status != "success" {
		t.Fatalf("query %s: %v %s", q, err, b)
	}
	if len(r.Data.Result) == 0 {
		return -1
	}
	if len(r.Data.Result) > 1 {
		t.Fatalf("query %s: %d results", q, len(r.Data.Result))
	}
	v, err := strconv.ParseFloat(r.Data.Result[0].Value[1].(string), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// waitQuery polls q until ok(value) or 30 s pass.
func waitQuery(t *testing.T, addr, q string, ok func(float64) bool) float64 {
	t.Helper()
	var v float64
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		if v = promQuery(t, addr, q); ok(v) {
			return v
		}
	}
	t.Fatalf("%s: %v after 30s", q, v)
	return v
}

// TestPrometheus: a real prometheus scrapes `obdfs mount --metrics` on
// loopback; the stack and layer series are there and move with reads, and
// `obdfs stats` still answers.
func TestPrometheus(t *testing.T) {
	needRoot(t)
	needFixtures(t)
	needs.Commands(t, "prometheus")
	maddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	base := filepath.Join(fixtures, "b/base.lz4.zfile")
	mp := mount(t, "--metrics", maddr, "s="+base+","+filepath.Join(fixtures, "d/l2.lsmt"))
	paddr := startPrometheus(t, maddr)

	reads := `obdfs_stack_reads_total{stack="s",frontend="fuse"}`
	before := waitQuery(t, paddr, reads, func(v float64) bool { return v >= 0 })
	if got := fileSHA(t, filepath.Join(mp, "s")); got != shaL12 {
		t.Fatalf("s: sha256 %s", got)
	}
	after := waitQuery(t, paddr, reads, func(v float64) bool { return v > before })
	t.Logf("%s: %v before the read, %v after", reads, before, after)
	for _, q := range []string{
		`obdfs_stack_read_bytes_total{stack="s"} >= 67108864`,
		`obdfs_stack_read_duration_seconds_count{stack="s"} > 0`,
		`sum(obdfs_layer_backing_read_bytes_total{stack="s"}) > 0`,
		`sum(obdfs_layer_cache_misses_total{stack="s",kind="zfile+lsmt"}) > 0`,
		`obdfs_block_cache_bytes > 0`,
	} {
		waitQuery(t, paddr, q, func(v float64) bool { return v > 0 })
	}
	if out := mustObdfs(t, "stats", "--json", mp); !json.Valid([]byte(out)) {
		t.Errorf("obdfs stats --json: %s", out)
	}
}
