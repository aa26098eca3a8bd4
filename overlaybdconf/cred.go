package overlaybdconf

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// Credentials are overlaybd's credential file (credentialConfig mode
// "file", or credentialFilePath): {"auths": {KEY: {"auth": base64(user:pass)}
// or {"username": ..., "password": ...}}}, where KEY is a registry host or a
// host/repository prefix. It is an authn.Keychain; the longest KEY that is
// the image's host or a whole-segment prefix of host/repository wins
// (overlaybd takes the first match).
type Credentials struct {
	path  string
	auths map[string]authn.AuthConfig
}

// LoadCredentials reads a credential file.
func LoadCredentials(path string) (*Credentials, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := ParseCredentials(b)
	if err != nil {
		return nil, fmt.Errorf("credential file %s: %w", path, err)
	}
	c.path = path
	return c, nil
}

// ParseCredentials parses credential file content.
func ParseCredentials(b []byte) (*Credentials, error) {
	var f struct {
		Auths map[string]struct {
			Auth     string `json:"auth"`
			Username string `json:"username"`
			Password string `json:"password"`
		} `json:"auths"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, err
	}
	c := &Credentials{auths: map[string]authn.AuthConfig{}}
	for k, v := range f.Auths {
		ac := authn.AuthConfig{Username: v.Username, Password: v.Password}
		if v.Auth != "" {
			dec, err := base64.StdEncoding.DecodeString(v.Auth)
			if err != nil {
				return nil, fmt.Errorf("auths[%q].auth: not base64: %w", k, err)
			}
			u, p, ok := strings.Cut(string(dec), ":")
			if !ok {
				return nil, fmt.Errorf("auths[%q].auth: no ':' between user and password", k)
			}
			ac.Username, ac.Password = u, p
		}
		c.auths[normalizeKey(k)] = ac
	}
	return c, nil
}

// normalizeKey drops a scheme, a trailing /v1/ or /v2/ and slashes, and
// spells Docker Hub's hosts as go-containerregistry does.
func normalizeKey(k string) string {
	if i := strings.Index(k, "://"); i >= 0 {
		k = k[i+3:]
	}
	k = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(k, "/"), "/v1"), "/v2")
	host, rest, _ := strings.Cut(k, "/")
	switch host {
	case "docker.io", "registry-1.docker.io", "registry.hub.docker.com", "hub.docker.com":
		host = name.DefaultRegistry
	}
	if rest != "" {
		return host + "/" + rest
	}
	return host
}

// Resolve implements authn.Keychain.
func (c *Credentials) Resolve(r authn.Resource) (authn.Authenticator, error) {
	target := r.RegistryStr()
	if repo, ok := r.(name.Repository); ok {
		target += "/" + repo.RepositoryStr()
	}
	best := ""
	for k := range c.auths {
		if (k == target || strings.HasPrefix(target, k+"/")) && len(k) > len(best) {
			best = k
		}
	}
	if best == "" {
		return authn.Anonymous, nil
	}
	return authn.FromConfig(c.auths[best]), nil
}
