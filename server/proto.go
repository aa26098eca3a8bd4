package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"path/filepath"
	"time"

	"github.com/obdfs/obdfs/disk"
	"github.com/obdfs/obdfs/fusefs"
)

// Request is one control call.
type Request struct {
	Op    string `json:"op"` // "add", "rm", "ls", "stats", "shutdown", "ping"
	Name  string `json:"name,omitempty"`
	Spec  string `json:"spec,omitempty"`
	Force bool   `json:"force,omitempty"`
	// Perm changes the owner and mode of an added stack.
	Perm PermOverride `json:"perm,omitzero"`
	// Lazy changes how an added stack's registry layers are read.
	Lazy LazyOptions `json:"lazy,omitzero"`
}

// Response answers a Request; Error is empty on success.
type Response struct {
	Error  string      `json:"error,omitempty"`
	Pid    int         `json:"pid,omitempty"`
	Stacks []StackInfo `json:"stacks,omitempty"`
	Cache  *CacheInfo  `json:"cache,omitempty"`
}

// StackInfo describes one served stack.
type StackInfo struct {
	Name     string           `json:"name"`
	Spec     string           `json:"spec"`
	Size     int64            `json:"size"`
	ReadOnly bool             `json:"read_only"`
	Layers   []disk.LayerInfo `json:"layers,omitempty"` // bottom first, when the disk is disk.Layered
	Stats    fusefs.FileStats `json:"stats"`
}

// CacheInfo is the state of the shared decoded-block cache.
type CacheInfo struct {
	Bytes    int64 `json:"bytes"`
	MaxBytes int64 `json:"max_bytes"`
}

// ErrNoDaemon means nothing answers on the control socket.
var ErrNoDaemon = errors.New("no obdfs daemon answers")

// Call sends req to the daemon listening on socket.
func Call(socket string, req Request) (*Response, error) {
	// A socket in a directory another user controls may not be ours.
	if err := checkRunDir(filepath.Dir(socket)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	c, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("%w on %s: %v", ErrNoDaemon, socket, err)
	}
	defer c.Close()
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", socket, err)
	}
	var resp Response
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return nil, fmt.Errorf("control socket %s: reading reply: %w", socket, err)
	}
	if resp.Error != "" {
		return &resp, errors.New(resp.Error)
	}
	return &resp, nil
}
