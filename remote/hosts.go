package remote

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	tomlu "github.com/pelletier/go-toml/v2/unstable"
)

// DefaultHostsDir is where containerd keeps its registry host configuration
// (config_path of the CRI plugin, ctr --hosts-dir).
const DefaultHostsDir = "/etc/containerd/certs.d"

// Host is one endpoint of a registry namespace, as containerd's hosts.toml
// describes it: mirrors first, in file order, then the server.
type Host struct {
	Scheme string // "https" or "http"
	Host   string // host[:port]
	Path   string // API root, "/v2" unless override_path says otherwise

	Pull, Resolve bool // capabilities (push is not used by obdfs)

	CA          []string    // CA certificate files (absolute)
	Client      [][2]string // client certificate and key files; key "" means in the cert file
	SkipVerify  *bool
	Header      http.Header
	DialTimeout time.Duration
}

// URL is the endpoint's API root, for messages.
func (h Host) URL() string { return h.Scheme + "://" + h.Host + h.Path }

// hostFile is the TOML shape of hosts.toml (and of each [host."..."] table).
type hostFile struct {
	Capabilities []string       `toml:"capabilities"`
	CA           any            `toml:"ca"`
	Client       any            `toml:"client"`
	SkipVerify   *bool          `toml:"skip_verify"`
	Header       map[string]any `toml:"header"`
	OverridePath bool           `toml:"override_path"`
	DialTimeout  string         `toml:"dial_timeout"`
}

// ParseHosts parses a hosts.toml for the registry namespace ns (the
// registry host the image names, e.g. docker.io or 10.0.0.1:5000). dir is
// the file's directory: relative certificate paths are taken from it. The
// result is the ordered list of endpoints: every [host."..."] in file order,
// then the server (the namespace's own registry when server is not set).
func ParseHosts(dir, ns string, data []byte) ([]Host, error) {
	var c struct {
		hostFile
		Server string              `toml:"server"`
		Hosts  map[string]hostFile `toml:"host"`
	}
	if err := toml.Unmarshal(data, &c); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, fmt.Errorf("TOML syntax, line %d column %d: %w", row, col, err)
		}
		return nil, fmt.Errorf("TOML: %w", err)
	}
	order, err := hostOrder(data)
	if err != nil {
		return nil, fmt.Errorf("TOML: %w", err)
	}
	var out []Host
	for _, name := range order {
		h, err := parseHost(dir, name, c.Hosts[name])
		if err != nil {
			return nil, fmt.Errorf("host %q: %w", name, err)
		}
		out = append(out, h)
	}
	server := c.Server
	if server == "" {
		server = defaultServer(ns)
	}
	h, err := parseHost(dir, server, c.hostFile)
	if err != nil {
		return nil, fmt.Errorf("server %q: %w", server, err)
	}
	return append(out, h), nil
}

// defaultServer is the registry's own endpoint when hosts.toml names none.
func defaultServer(ns string) string {
	if ns == "docker.io" || ns == "index.docker.io" {
		return "https://registry-1.docker.io"
	}
	return "https://" + ns
}

// hostOrder lists the [host."..."] tables in the order the file has them;
// the decoded map has no order, and the order is the mirror priority.
func hostOrder(data []byte) ([]string, error) {
	var p tomlu.Parser
	p.Reset(data)
	var order []string
	seen := map[string]bool{}
	for p.NextExpression() {
		e := p.Expression()
		if e.Kind != tomlu.Table {
			continue
		}
		var parts []string
		for it := e.Key(); it.Next(); {
			parts = append(parts, string(it.Node().Data))
		}
		if len(parts) < 2 || parts[0] != "host" || seen[parts[1]] {
			continue
		}
		seen[parts[1]] = true
		order = append(order, parts[1])
	}
	return order, p.Error()
}

func parseHost(dir, server string, f hostFile) (Host, error) {
	if !strings.HasPrefix(server, "http://") && !strings.HasPrefix(server, "https://") {
		server = "https://" + server
	}
	u, err := url.Parse(server)
	if err != nil {
		return Host{}, err
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return Host{}, errors.New("want [http[s]://]HOST[:PORT][/PATH]")
	}
	h := Host{Scheme: u.Scheme, Host: u.Host, SkipVerify: f.SkipVerify}
	p := ""
	if u.Path != "" {
		p = path.Clean("/" + u.Path)
	}
	if !f.OverridePath && !strings.HasSuffix(p, "/v2") {
		p = strings.TrimSuffix(p, "/") + "/v2"
	}
	h.Path = strings.TrimSuffix(p, "/")
	if len(f.Capabilities) == 0 {
		h.Pull, h.Resolve = true, true
	}
	for _, c := range f.Capabilities {
		switch strings.ToLower(c) {
		case "pull":
			h.Pull = true
		case "resolve":
			h.Resolve = true
		case "push":
		default:
			return Host{}, fmt.Errorf("unknown capability %q (want pull, resolve or push)", c)
		}
	}
	abs := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	strs := func(what string, v any) ([]string, error) {
		switch v := v.(type) {
		case nil:
			return nil, nil
		case string:
			return []string{v}, nil
		case []any:
			out := make([]string, len(v))
			for i, e := range v {
				s, ok := e.(string)
				if !ok {
					return nil, fmt.Errorf("%s: want strings, got %T", what, e)
				}
				out[i] = s
			}
			return out, nil
		}
		return nil, fmt.Errorf("%s: want a string or an array of strings, got %T", what, v)
	}
	ca, err := strs("ca", f.CA)
	if err != nil {
		return Host{}, err
	}
	for _, c := range ca {
		h.CA = append(h.CA, abs(c))
	}
	switch v := f.Client.(type) {
	case nil:
	case string:
		h.Client = [][2]string{{abs(v), ""}}
	case []any:
		for _, e := range v {
			switch e := e.(type) {
			case string:
				h.Client = append(h.Client, [2]string{abs(e), ""})
			case []any:
				pair, err := strs("client pair", e)
				if err != nil {
					return Host{}, err
				}
				if len(pair) != 2 {
					return Host{}, fmt.Errorf("client pair has %d entries, want [cert, key]", len(pair))
				}
				h.Client = append(h.Client, [2]string{abs(pair[0]), abs(pair[1])})
			default:
				return Host{}, fmt.Errorf("client: want a file or a [cert, key] pair, got %T", e)
			}
		}
	default:
		return Host{}, fmt.Errorf("client: want a string or an array, got %T", v)
	}
	if len(f.Header) > 0 {
		h.Header = http.Header{}
		for k, v := range f.Header {
			vs, err := strs("header "+k, v)
			if err != nil {
				return Host{}, err
			}
			for _, s := range vs {
				h.Header.Add(k, s)
			}
		}
	}
	if f.DialTimeout != "" {
		if h.DialTimeout, err = time.ParseDuration(f.DialTimeout); err != nil || h.DialTimeout <= 0 {
			return Host{}, fmt.Errorf("dial_timeout %q: want a positive duration such as 2s", f.DialTimeout)
		}
	}
	return h, nil
}

// hostDirs are the directories looked at for namespace ns, in containerd's
// order: HOST_PORT_ (":port" spelled "_port_"), HOST:PORT, then _default.
func hostDirs(root, ns string) []string {
	var out []string
	if i := strings.LastIndex(ns, ":"); i > 0 {
		out = append(out, filepath.Join(root, ns[:i]+"_"+ns[i+1:]+"_"))
	}
	return append(out, filepath.Join(root, ns), filepath.Join(root, "_default"))
}

// LoadHosts reads the endpoints of namespace ns from root (a certs.d
// directory): its hosts.toml, or else the Docker-style certificate files of
// its directory (*.crt CAs, *.cert/*.key client pairs) for the registry
// itself. It returns nil when root has nothing for ns.
func LoadHosts(root, ns string) ([]Host, error) {
	if root == "" {
		return nil, nil
	}
	for _, dir := range hostDirs(root, ns) {
		st, err := os.Stat(dir)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			continue
		}
		file := filepath.Join(dir, "hosts.toml")
		data, err := os.ReadFile(file)
		if err == nil && len(data) > 0 {
			hs, err := ParseHosts(dir, ns, data)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", file, err)
			}
			return hs, nil
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		return certFiles(dir, ns)
	}
	return nil, nil
}

// certFiles is the fallback of a host directory without hosts.toml.
func certFiles(dir, ns string) ([]Host, error) {
	h, err := parseHost(dir, defaultServer(ns), hostFile{})
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		switch {
		case strings.HasSuffix(e.Name(), ".crt"):
			h.CA = append(h.CA, p)
		case strings.HasSuffix(e.Name(), ".cert"):
			key := strings.TrimSuffix(p, ".cert") + ".key"
			if _, err := os.Stat(key); err != nil {
				key = ""
			}
			h.Client = append(h.Client, [2]string{p, key})
		}
	}
	return []Host{h}, nil
}

// tlsConfig builds the TLS settings of h on top of base (which may be nil).
func (h Host) tlsConfig(base *tls.Config) (*tls.Config, error) {
	c := &tls.Config{}
	if base != nil {
		c = base.Clone()
	}
	if h.SkipVerify != nil {
		c.InsecureSkipVerify = *h.SkipVerify //nolint:gosec // asked for by hosts.toml
	}
	if len(h.CA) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		for _, f := range h.CA {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("CA certificate: %w", err)
			}
			if !pool.AppendCertsFromPEM(b) {
				return nil, fmt.Errorf("CA certificate %s: no PEM certificate in it", f)
			}
		}
		c.RootCAs = pool
	}
	for _, p := range h.Client {
		cert, err := os.ReadFile(p[0])
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		key := cert
		if p[1] != "" {
			if key, err = os.ReadFile(p[1]); err != nil {
				return nil, fmt.Errorf("client key: %w", err)
			}
		}
		kp, err := tls.X509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("client certificate %s: %w", p[0], err)
		}
		c.Certificates = append(c.Certificates, kp)
	}
	return c, nil
}
