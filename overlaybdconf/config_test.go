package overlaybdconf

import (
	"encoding/base64"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// A config with every GlobalConfig section overlaybd documents.
const full = `{
  "logConfig": {"logLevel": 2, "logPath": "/var/log/ob.log", "logSizeMB": 10, "logRotateNum": 3},
  "cacheConfig": {"cacheType": "file", "cacheDir": "/cache/reg", "cacheSizeGB": 8, "refillSize": 1048576, "blockSize": 65536},
  "gzipCacheConfig": {"enable": true, "cacheDir": "/cache/gz", "cacheSizeGB": 4},
  "credentialConfig": {"mode": "file", "path": "/etc/ob/cred.json"},
  "ioEngine": 0,
  "download": {"enable": true, "delay": 600, "delayExtra": 30, "maxMBps": 100},
  "p2pConfig": {"enable": true, "address": "localhost:19145/dadip2p"},
  "exporterConfig": {"enable": true, "uriPrefix": "/m", "port": 9999, "updateInterval": 60000000},
  "enableAudit": true,
  "auditPath": "/var/log/ob-audit.log",
  "registryFsVersion": "v2",
  "serviceConfig": {"enable": false, "address": "http://127.0.0.1:9862"},
  "registryCacheDir": "/legacy",
  "madeUpKey": 1
}`

func TestParse(t *testing.T) {
	warn, debug := slog.LevelWarn, slog.LevelDebug
	tests := []struct {
		name    string
		in      string
		want    Settings
		ignored []string // must be among Ignored
		err     string
	}{
		{name: "full", in: full, want: Settings{
			CacheDir: "/cache/reg", CacheMax: 8 << 30, RefillSize: 1 << 20, CredentialFile: "/etc/ob/cred.json",
			P2P: "localhost:19145/dadip2p", Download: true, DownloadDelay: 600 * time.Second, DownloadMaxBytes: 100 << 20,
			Metrics: ":9999", MetricsPath: "/m", LogLevel: &warn, LogPath: "/var/log/ob.log"},
			ignored: []string{"gzipCacheConfig (no obdfs meaning)", "enableAudit (no obdfs meaning)", "madeUpKey",
				"registryCacheDir (cacheConfig.cacheType is set)", "cacheConfig.blockSize (obdfs caches refillSize chunks)",
				"download.delayExtra (no random extra delay)", "logConfig.logSizeMB (obdfs does not rotate its log)",
				"exporterConfig.updateInterval (obdfs metrics are read at each scrape)"}},
		{name: "legacy keys", in: `{"registryCacheDir": "/old", "registryCacheSizeGB": 2, "credentialFilePath": "/c.json",
			"logLevel": 0, "logPath": "/l.log", "cacheConfig": {"cacheDir": "/unused"}, "p2pConfig": {"enable": false, "address": "x:1"}}`,
			want:    Settings{CacheDir: "/old", CacheMax: 2 << 30, CredentialFile: "/c.json", LogLevel: &debug, LogPath: "/l.log"},
			ignored: []string{"cacheConfig.cacheDir (cacheConfig.cacheType is not set)"}},
		{name: "p2p default address", in: `{"p2pConfig": {"enable": true}}`, want: Settings{P2P: "http://localhost:9731/accelerator"}},
		{name: "http credentials", in: `{"credentialConfig": {"mode": "http", "path": "http://auth"}}`,
			want: Settings{}, ignored: []string{"credentialConfig.mode=http (obdfs reads credential files only; the docker config and its helpers are used)"}},
		{name: "empty", in: `{}`, want: Settings{}},
		{name: "not an object", in: `[1]`, err: "want a JSON object"},
		{name: "bad type", in: `{"cacheConfig": {"cacheType": "file", "cacheSizeGB": "big"}}`, err: `cacheConfig.cacheSizeGB: "big" is not a *int64`},
		{name: "bad refill", in: `{"cacheConfig": {"refillSize": 1000}}`, err: "cacheConfig.refillSize: 1000 is not a power of two"},
		{name: "bad section", in: `{"download": 3}`, err: "download: want a JSON object"},
		{name: "file mode without path", in: `{"credentialConfig": {"mode": "file"}}`, err: `mode "file" needs a path`},
		{name: "bad port", in: `{"exporterConfig": {"enable": true, "port": 70000}}`, err: "exporterConfig.port: 70000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ign := got.Ignored
			got.Ignored = nil
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", *got, tt.want)
			}
			for _, w := range tt.ignored {
				found := false
				for _, g := range ign {
					found = found || g == w
				}
				if !found {
					t.Errorf("%q not reported as ignored; ignored: %q", w, ign)
				}
			}
		})
	}
}

func TestCredentials(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	c, err := ParseCredentials([]byte(`{"auths": {
		"r.io": {"auth": "` + b64("host:pw") + `"},
		"r.io/team": {"username": "team", "password": "tpw"},
		"https://index.docker.io/v1/": {"auth": "` + b64("hub:hpw") + `"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ repo, user string }{
		{"r.io/team/app", "team"},
		{"r.io/teams/app", "host"},
		{"r.io/other", "host"},
		{"docker.io/library/busybox", "hub"},
		{"q.io/x", ""},
	} {
		repo, err := name.NewRepository(tc.repo)
		if err != nil {
			t.Fatal(err)
		}
		a, err := c.Resolve(repo)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := a.Authorization()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Username != tc.user || (tc.user == "" && a != authn.Anonymous) {
			t.Errorf("%s: user %q, want %q", tc.repo, cfg.Username, tc.user)
		}
	}
	for _, bad := range []string{`{"auths": {"r.io": {"auth": "%%%"}}}`, `{"auths": {"r.io": {"auth": "` + b64("nocolon") + `"}}}`, `[`} {
		if _, err := ParseCredentials([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(full))
	f.Add([]byte(`{"cacheConfig": {"cacheType": "ocf"}, "credentialConfig": {"mode": "file", "path": "/x"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Parse(b)
		if err != nil {
			return
		}
		if s.CacheMax < 0 || s.RefillSize < 0 || s.DownloadMaxBytes < 0 || s.DownloadDelay < 0 {
			t.Fatalf("negative setting from %q: %+v", b, s)
		}
	})
}

func FuzzParseCredentials(f *testing.F) {
	f.Add([]byte(`{"auths": {"r.io/a": {"auth": "dTpw"}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCredentials(b)
		if err != nil {
			return
		}
		repo, _ := name.NewRepository("r.io/a/b")
		if _, err := c.Resolve(repo); err != nil {
			t.Fatal(err)
		}
	})
}
