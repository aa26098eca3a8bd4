// Package overlaybdconf reads overlaybd's service configuration
// (/etc/overlaybd/overlaybd.json) so that a host set up for overlaybd runs
// obdfs without new configuration: the keys with an obdfs meaning become
// Settings, the others are listed in Settings.Ignored.
//
// Key names and defaults follow overlaybd's GlobalConfig (src/config.h) and
// how its image service reads them: cacheConfig wins over the legacy
// registryCacheDir/registryCacheSizeGB when its cacheType is set, logConfig
// over logLevel/logPath when its logPath is set, credentialConfig over
// credentialFilePath when its mode is set.
package overlaybdconf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"time"
)

// DefaultPath is where overlaybd keeps its configuration.
const DefaultPath = "/etc/overlaybd/overlaybd.json"

// Settings are what obdfs takes from the file. A zero field was not set.
type Settings struct {
	Path string

	CacheDir   string // cacheConfig.cacheDir, or registryCacheDir (obdfs uses its obdfs/ subdirectory)
	CacheMax   int64  // cacheConfig.cacheSizeGB, or registryCacheSizeGB, in bytes
	RefillSize int64  // cacheConfig.refillSize

	CredentialFile string // credentialConfig.path with mode "file", or credentialFilePath

	P2P string // p2pConfig.address when p2pConfig.enable

	Download         bool          // download.enable: background download of whole layers
	DownloadDelay    time.Duration // download.delay (seconds)
	DownloadMaxBytes int64         // download.maxMBps, in bytes per second

	Metrics     string // exporterConfig: ":PORT" when enabled
	MetricsPath string // exporterConfig.uriPrefix

	LogLevel *slog.Level // logConfig.logLevel or logLevel (overlaybd: 0 debug, 1 info, 2 warn, 3+ error)
	LogPath  string      // logConfig.logPath or logPath

	UserAgent string

	// Ignored lists the keys found without an obdfs meaning (dotted paths,
	// sorted), with the reason where there is one.
	Ignored []string
}

// Load reads and parses path.
func Load(path string) (*Settings, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("overlaybd config %s: %w", path, err)
	}
	s.Path = path
	return s, nil
}

type section map[string]json.RawMessage

// reader decodes keys of a JSON object, remembering which were used.
type reader struct {
	prefix string
	m      section
	used   map[string]bool
	errs   []error
}

func newReader(prefix string, raw json.RawMessage) (*reader, error) {
	r := &reader{prefix: prefix, used: map[string]bool{}}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&r.m); err != nil {
		what := "the file"
		if prefix != "" {
			what = strings.TrimSuffix(prefix, ".")
		}
		return nil, fmt.Errorf("%s: want a JSON object: %w", what, err)
	}
	return r, nil
}

func (r *reader) has(k string) bool { _, ok := r.m[k]; return ok }

func (r *reader) get(k string, v any) bool {
	raw, ok := r.m[k]
	if !ok {
		return false
	}
	r.used[k] = true
	if err := json.Unmarshal(raw, v); err != nil {
		r.errs = append(r.errs, fmt.Errorf("%s%s: %s is not a %T", r.prefix, k, bytes.TrimSpace(raw), v))
		return false
	}
	return true
}

func (r *reader) sub(k string) *reader {
	raw, ok := r.m[k]
	if !ok {
		return &reader{prefix: r.prefix + k + ".", m: section{}, used: map[string]bool{}}
	}
	r.used[k] = true
	s, err := newReader(r.prefix+k+".", raw)
	if err != nil {
		r.errs = append(r.errs, err)
		return &reader{prefix: r.prefix + k + ".", m: section{}, used: map[string]bool{}}
	}
	return s
}

// ignore marks k as read without meaning, with a reason.
func (r *reader) ignore(out *[]string, k, why string) {
	if !r.has(k) {
		return
	}
	r.used[k] = true
	*out = append(*out, r.prefix+k+" ("+why+")")
}

func (r *reader) rest(out *[]string) {
	for k := range r.m {
		if !r.used[k] {
			*out = append(*out, r.prefix+k)
		}
	}
}

// Parse reads overlaybd.json content.
func Parse(data []byte) (*Settings, error) {
	top, err := newReader("", data)
	if err != nil {
		return nil, err
	}
	s := &Settings{}
	var subs []*reader
	gb := func(r *reader, k string) (int64, bool) {
		var v int64
		if !r.get(k, &v) {
			return 0, false
		}
		if v <= 0 || v > 1<<20 {
			r.errs = append(r.errs, fmt.Errorf("%s%s: %d GB is out of range", r.prefix, k, v))
			return 0, false
		}
		return v << 30, true
	}

	// Blob cache.
	cc := top.sub("cacheConfig")
	subs = append(subs, cc)
	var cacheType string
	cc.get("cacheType", &cacheType)
	if cacheType != "" {
		cc.get("cacheDir", &s.CacheDir)
		s.CacheMax, _ = gb(cc, "cacheSizeGB")
		top.ignore(&s.Ignored, "registryCacheDir", "cacheConfig.cacheType is set")
		top.ignore(&s.Ignored, "registryCacheSizeGB", "cacheConfig.cacheType is set")
	} else {
		top.get("registryCacheDir", &s.CacheDir)
		s.CacheMax, _ = gb(top, "registryCacheSizeGB")
		cc.ignore(&s.Ignored, "cacheDir", "cacheConfig.cacheType is not set")
		cc.ignore(&s.Ignored, "cacheSizeGB", "cacheConfig.cacheType is not set")
	}
	if cacheType != "" && cacheType != "file" {
		s.Ignored = append(s.Ignored, "cacheConfig.cacheType="+cacheType+" (obdfs has one cache kind, a file per blob)")
	}
	top.ignore(&s.Ignored, "cacheType", "obdfs has one cache kind, a file per blob")
	var refill int64
	if cc.get("refillSize", &refill) {
		if refill < 4096 || refill&(refill-1) != 0 || refill > 64<<20 {
			cc.errs = append(cc.errs, fmt.Errorf("cacheConfig.refillSize: %d is not a power of two between 4 KiB and 64 MiB", refill))
		} else {
			s.RefillSize = refill
		}
	}
	cc.ignore(&s.Ignored, "blockSize", "obdfs caches refillSize chunks")

	// Credentials.
	cred := top.sub("credentialConfig")
	subs = append(subs, cred)
	var mode, path string
	cred.get("mode", &mode)
	cred.get("path", &path)
	switch mode {
	case "":
		top.get("credentialFilePath", &s.CredentialFile)
	case "file":
		s.CredentialFile = path
		top.ignore(&s.Ignored, "credentialFilePath", "credentialConfig.mode is set")
	default:
		s.Ignored = append(s.Ignored, "credentialConfig.mode="+mode+" (obdfs reads credential files only; the docker config and its helpers are used)")
		top.ignore(&s.Ignored, "credentialFilePath", "credentialConfig.mode is set")
	}
	for _, k := range []string{"timeout", "client_cert_path", "client_key_path", "server_ca_path"} {
		cred.ignore(&s.Ignored, k, "for the http/https credential modes")
	}
	if mode == "file" && path == "" {
		cred.errs = append(cred.errs, errors.New(`credentialConfig: mode "file" needs a path`))
	}

	// P2P.
	p2p := top.sub("p2pConfig")
	subs = append(subs, p2p)
	var enable bool
	var addr string
	p2p.get("enable", &enable)
	p2p.get("address", &addr)
	if enable {
		if addr == "" {
			addr = "http://localhost:9731/accelerator" // overlaybd's default
		}
		s.P2P = addr
	}

	// Background download.
	dl := top.sub("download")
	subs = append(subs, dl)
	dl.get("enable", &s.Download)
	var delay, mbps int64
	if dl.get("delay", &delay) && delay >= 0 {
		s.DownloadDelay = time.Duration(delay) * time.Second
	}
	if dl.get("maxMBps", &mbps) && mbps > 0 {
		s.DownloadMaxBytes = mbps << 20
	}
	dl.ignore(&s.Ignored, "delayExtra", "no random extra delay")
	dl.ignore(&s.Ignored, "tryCnt", "the registry retries apply")
	dl.ignore(&s.Ignored, "blockSize", "the download uses 16 MiB GETs")

	// Exporter.
	ex := top.sub("exporterConfig")
	subs = append(subs, ex)
	var exEnable bool
	ex.get("enable", &exEnable)
	port := int64(9863) // overlaybd's default
	ex.get("port", &port)
	prefix := "/metrics"
	ex.get("uriPrefix", &prefix)
	if exEnable {
		if port <= 0 || port > 65535 {
			ex.errs = append(ex.errs, fmt.Errorf("exporterConfig.port: %d is not a port", port))
		} else {
			s.Metrics = fmt.Sprintf(":%d", port)
			s.MetricsPath = prefix
		}
	}
	ex.ignore(&s.Ignored, "updateInterval", "obdfs metrics are read at each scrape")

	// Log.
	lc := top.sub("logConfig")
	subs = append(subs, lc)
	var lvl int64
	var haveLvl bool
	lc.get("logPath", &s.LogPath)
	if s.LogPath != "" {
		haveLvl = lc.get("logLevel", &lvl)
		top.ignore(&s.Ignored, "logPath", "logConfig.logPath is set")
		top.ignore(&s.Ignored, "logLevel", "logConfig.logPath is set")
	} else {
		top.get("logPath", &s.LogPath)
		haveLvl = top.get("logLevel", &lvl)
		lc.ignore(&s.Ignored, "logLevel", "logConfig.logPath is not set")
	}
	if haveLvl {
		l := slog.LevelError
		switch {
		case lvl <= 0:
			l = slog.LevelDebug
		case lvl == 1:
			l = slog.LevelInfo
		case lvl == 2:
			l = slog.LevelWarn
		}
		s.LogLevel = &l
	}
	lc.ignore(&s.Ignored, "logSizeMB", "obdfs does not rotate its log")
	lc.ignore(&s.Ignored, "logRotateNum", "obdfs does not rotate its log")

	top.get("userAgent", &s.UserAgent)

	for _, k := range []string{"gzipCacheConfig", "prefetchConfig", "certConfig", "serviceConfig"} {
		top.ignore(&s.Ignored, k, "no obdfs meaning")
	}
	for _, k := range []string{"ioEngine", "enableAudit", "auditPath", "enableThread", "registryFsVersion"} {
		top.ignore(&s.Ignored, k, "no obdfs meaning")
	}
	var errs []error
	for _, r := range append([]*reader{top}, subs...) {
		r.rest(&s.Ignored)
		errs = append(errs, r.errs...)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	sort.Strings(s.Ignored)
	return s, nil
}
