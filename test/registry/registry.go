// Package registry starts Debian's docker-registry (the reference
// distribution server) on a loopback port for tests: storage and config in a
// temporary directory, open or with htpasswd basic auth, stopped in cleanup.
// The packaged system service is never used.
package registry

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/obdfs/obdfs/internal/needs"
	"github.com/obdfs/obdfs/internal/proctest"
)

// Binary is the server executable (Debian package docker-registry).
const Binary = "/usr/bin/docker-registry"

// Server is a running docker-registry.
type Server struct {
	Host     string // 127.0.0.1:PORT
	User     string // "" when open
	Password string

	t      testing.TB
	dir    string
	config string
	proc   *proctest.Proc // nil when stopped
}

// Start runs a registry for the test; with auth it requires basic auth with
// User/Password. It skips the test when the binary (or htpasswd, for auth)
// is missing.
func Start(t testing.TB, auth bool) *Server { return start(t, auth, "") }

// StartMirror runs a pull-through cache (docker-registry's proxy mode) of
// the open registry at upstream (HOST:PORT, plain HTTP): blobs it is asked
// for are fetched from upstream once and kept in its own storage.
func StartMirror(t testing.TB, upstream string) *Server {
	return start(t, false, fmt.Sprintf("proxy:\n  remoteurl: http://%s\n", upstream))
}

// AccessLog returns what the server logged so far (requests, when started
// by StartMirror, whose access log is on).
func (s *Server) AccessLog() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "registry.log"))
	return string(b)
}

func start(t testing.TB, auth bool, extra string) *Server {
	t.Helper()
	needs.Commands(t, Binary)
	dir := t.TempDir()
	s := &Server{t: t, dir: dir, config: filepath.Join(dir, "config.yml")}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	s.Host = fmt.Sprintf("127.0.0.1:%d", port)
	authCfg := ""
	if auth {
		needs.Commands(t, "htpasswd")
		hp, err := exec.LookPath("htpasswd")
		if err != nil {
			t.Fatal(err)
		}
		s.User, s.Password = "obdfs", "s3cret-pw"
		out, err := exec.Command(hp, "-Bbn", s.User, s.Password).Output()
		if err != nil {
			t.Fatalf("htpasswd: %v", err)
		}
		pw := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(pw, out, 0o600); err != nil {
			t.Fatal(err)
		}
		authCfg = fmt.Sprintf("auth:\n  htpasswd:\n    realm: obdfs-test\n    path: %s\n", pw)
	}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: obdfs-test-secret
%s%s`, filepath.Join(dir, "storage"), s.Host, authCfg, extra)
	if err := os.WriteFile(s.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) start() {
	s.t.Helper()
	log, err := os.OpenFile(filepath.Join(s.dir, "registry.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(Binary, "serve", s.config)
	cmd.Stdout, cmd.Stderr = log, log
	if s.proc, err = proctest.Start(cmd); err != nil {
		s.t.Fatalf("start %s: %v", Binary, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + s.Host + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return
			}
		}
		select {
		case <-s.proc.Exited():
			b, _ := os.ReadFile(filepath.Join(s.dir, "registry.log"))
			s.t.Fatalf("docker-registry exited at start:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			s.Stop()
			b, _ := os.ReadFile(filepath.Join(s.dir, "registry.log"))
			s.t.Fatalf("docker-registry did not answer on %s:\n%s", s.Host, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop ends the server (idempotent). Its storage stays for Restart.
func (s *Server) Stop() {
	if s.proc == nil {
		return
	}
	s.proc.Stop(5 * time.Second)
	s.proc = nil
}

// Restart starts the server again on the same port with the same storage.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// Ref returns docker://HOST/repo[:tag] style references.
func (s *Server) Ref(repoAndTag string) string { return "docker://" + s.Host + "/" + repoAndTag }

// Keychain returns credentials for this server (anonymous when open).
func (s *Server) Keychain() authn.Keychain { return keychain{s} }

type keychain struct{ s *Server }

func (k keychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if k.s.User == "" || r.RegistryStr() != k.s.Host {
		return authn.Anonymous, nil
	}
	return &authn.Basic{Username: k.s.User, Password: k.s.Password}, nil
}

// DockerConfig writes a docker config.json holding this server's
// credentials into a new directory and returns it, for DOCKER_CONFIG (so
// authn.DefaultKeychain finds them the way it does for users).
func (s *Server) DockerConfig(t testing.TB) string {
	dir := t.TempDir()
	auth := ""
	if s.User != "" {
		enc := base64.StdEncoding.EncodeToString([]byte(s.User + ":" + s.Password))
		auth = fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, s.Host, enc)
	} else {
		auth = `{"auths":{}}`
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(auth), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}
