package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/obdfs/obdfs/overlaybdconf"
	"github.com/obdfs/obdfs/remote"
)

// configFlag is --config: overlaybd's service configuration, read when
// present. Its settings apply where the matching flag is left at its
// default; a flag given explicitly wins.
type configFlag struct {
	Config string `default:"/etc/overlaybd/overlaybd.json" placeholder:"FILE" type:"path" help:"overlaybd's service config: its cache, credential file, P2P, download, exporter and log settings apply where the flags are left at their defaults (read when present; \"\" for none)."`
}

var serviceConfig struct {
	once sync.Once
	s    *overlaybdconf.Settings
	err  error
}

// settings loads the file once per process (nil when there is none) and
// reports once what of it obdfs does not use.
func (f configFlag) settings() (*overlaybdconf.Settings, error) {
	serviceConfig.once.Do(func() {
		if f.Config == "" {
			return
		}
		s, err := overlaybdconf.Load(f.Config)
		if errors.Is(err, os.ErrNotExist) && f.Config == overlaybdconf.DefaultPath {
			return
		}
		if err != nil {
			serviceConfig.err = fmt.Errorf("--config: %w", err)
			return
		}
		slog.Info("using overlaybd's config", "file", s.Path)
		if len(s.Ignored) > 0 {
			slog.Info("overlaybd config keys without an obdfs meaning, ignored", "file", s.Path, "keys", strings.Join(s.Ignored, ", "))
		}
		if s.LogLevel != nil && logLevel.Level() == slog.LevelInfo {
			logLevel.Set(*s.LogLevel)
		}
		serviceConfig.s = s
	})
	return serviceConfig.s, serviceConfig.err
}

// applyRemote puts the file's registry settings into o where the flags
// (given as their parsed values and defaults) left them.
func (f remoteFlags) applyConfig(o *remote.Options) error {
	s, err := f.settings()
	if err != nil || s == nil {
		return err
	}
	if s.CacheDir != "" && f.CacheDir == remote.DefaultCacheDir {
		// A directory of its own inside overlaybd's: obdfs's cache
		// layout differs, and obdfs makes its cache directory private.
		o.CacheDir = filepath.Join(s.CacheDir, "obdfs")
	}
	if s.CacheMax > 0 && f.CacheMax == "4GiB" {
		o.CacheMax = s.CacheMax
	}
	if s.RefillSize > 0 {
		o.RefillSize = s.RefillSize
	}
	if s.P2P != "" && f.P2P == "" {
		o.P2P = s.P2P
	}
	if s.UserAgent != "" {
		o.UserAgent = s.UserAgent
	}
	if s.CredentialFile != "" {
		c, err := overlaybdconf.LoadCredentials(s.CredentialFile)
		if errors.Is(err, os.ErrNotExist) {
			slog.Warn("overlaybd credential file missing; using the docker config", "file", s.CredentialFile)
		} else if err != nil {
			return fmt.Errorf("overlaybd config %s: %w", s.Path, err)
		} else {
			o.Keychain = authn.NewMultiKeychain(c, authn.DefaultKeychain)
		}
	}
	return nil
}

// applyDownload turns on the background download when the file's download
// block asks for it and --background was not given.
func (f stackFlags) applyDownload(o *remote.Options) error {
	s, err := f.settings()
	if err != nil || s == nil || !s.Download || f.Background {
		return err
	}
	o.Background = remote.BackgroundOptions{Enable: true, Delay: s.DownloadDelay, MaxBytesPerSec: s.DownloadMaxBytes}
	return nil
}
