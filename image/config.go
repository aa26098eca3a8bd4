package image

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// Config is an overlaybd image config (config.v1.json), docs/image-config.md §1. Keys
// obdfs does not act on (resultFile, accelerationLayer, ...) are
// accepted and ignored, as overlaybd's parser does.
type Config struct {
	RepoBlobURL string          `json:"repoBlobUrl,omitempty"`
	Lowers      []LowerConfig   `json:"lowers,omitempty"`
	Upper       UpperConfig     `json:"upper,omitzero"`
	ResultFile  string          `json:"resultFile,omitempty"`
	Download    *DownloadConfig `json:"download,omitempty"`
	// RecordTracePath records the ranges read from the image's registry
	// lowers into this file (remote.TraceRecorder).
	RecordTracePath string `json:"recordTracePath,omitempty"`
}

// DownloadConfig is overlaybd's `download` block: the background download
// of the registry layers of the image (remote.BackgroundOptions). It
// overrides the command line's background flags for this image.
type DownloadConfig struct {
	Enable  bool  `json:"enable"`
	Delay   int64 `json:"delay,omitempty"`   // seconds after the open
	MaxMBps int64 `json:"maxMBps,omitempty"` // MiB/s for the process, 0: no bound
}

// LowerConfig is one read-only layer, bottom first in Config.Lowers.
type LowerConfig struct {
	File   string `json:"file,omitempty"`
	Dir    string `json:"dir,omitempty"`
	Digest string `json:"digest,omitempty"`
	Size   int64  `json:"size,omitempty"`

	// turboOCI layers; obdfs refuses them with a clear error.
	TargetFile   string `json:"targetFile,omitempty"`
	TargetDigest string `json:"targetDigest,omitempty"`
}

// UpperConfig is the writable layer; the image is read-only when either
// path is empty.
type UpperConfig struct {
	Index string `json:"index,omitempty"`
	Data  string `json:"data,omitempty"`
}

// maxConfigSize bounds the config file read: a few KiB for 255 layers.
const maxConfigSize = 16 << 20

// maxConfigLayers bounds a config before any file is opened; LSMT itself
// refuses more than 255 read-only layers.
const maxConfigLayers = 255

// ParseConfig decodes and checks an image config. name is used in errors.
func ParseConfig(data []byte, name string) (*Config, error) {
	var c Config
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("image config %s: %w", name, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("image config %s: trailing data after the JSON object", name)
	}
	if len(c.Lowers) > maxConfigLayers {
		return nil, fmt.Errorf("image config %s: %d lowers, at most %d", name, len(c.Lowers), maxConfigLayers)
	}
	for i, l := range c.Lowers {
		switch {
		case l.TargetFile != "" || l.TargetDigest != "":
			return nil, fmt.Errorf("image config %s: lowers[%d]: turboOCI layers (targetFile/targetDigest) are not supported", name, i)
		case l.File == "" && l.Dir == "" && l.Digest == "":
			return nil, fmt.Errorf("image config %s: lowers[%d]: needs file, dir or digest", name, i)
		case l.Digest != "" && !strings.HasPrefix(l.Digest, "sha256:"):
			return nil, fmt.Errorf("image config %s: lowers[%d]: digest %q is not sha256:<hex>", name, i, l.Digest)
		case l.Size < 0:
			return nil, fmt.Errorf("image config %s: lowers[%d]: negative size", name, i)
		}
	}
	if d := c.Download; d != nil && (d.Delay < 0 || d.MaxMBps < 0 || d.Delay > 1<<31 || d.MaxMBps > 1<<30) {
		return nil, fmt.Errorf("image config %s: download: delay %d or maxMBps %d out of range", name, d.Delay, d.MaxMBps)
	}
	if (c.Upper.Index == "") != (c.Upper.Data == "") {
		return nil, fmt.Errorf("image config %s: upper needs both index and data (or neither)", name)
	}
	if len(c.Lowers) == 0 && c.Upper.Data == "" {
		return nil, fmt.Errorf("image config %s: no lowers and no upper", name)
	}
	return &c, nil
}

// resolve makes relative paths relative to the config file's directory, so
// a config can travel with its layers.
func (c *Config) resolve(dir string) {
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	for i := range c.Lowers {
		c.Lowers[i].File = abs(c.Lowers[i].File)
		c.Lowers[i].Dir = abs(c.Lowers[i].Dir)
	}
	c.Upper.Index = abs(c.Upper.Index)
	c.Upper.Data = abs(c.Upper.Data)
}

// ErrSpec classifies errors in a STACK argument.
var ErrSpec = errors.New("bad stack spec")
