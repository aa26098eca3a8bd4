package image

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/obdfs/obdfs/remote"
)

// isRemoteSpec reports whether spec names a registry or OCI-layout image.
func isRemoteSpec(spec string) bool {
	return strings.HasPrefix(spec, "docker://") || strings.HasPrefix(spec, "oci:")
}

// openRemote opens docker://HOST/REPO[:TAG|@DIGEST] or oci:DIR[:TAG]: every
// layer is a lazily fetched blob keyed in the block cache by its digest.
func openRemote(spec string, o Options) (*Stack, error) {
	blobs, err := remote.Resolve(o.context(), spec, o.Remote)
	if err != nil {
		return nil, err
	}
	s := &Stack{}
	s.lowers, err = openLayers(len(blobs), func(i int) (*Layer, error) {
		l, err := openBlobLayer(blobs[i], o)
		if err != nil {
			blobs[i].Close()
			return nil, fmt.Errorf("%s: layer %d: %w", spec, i, err)
		}
		return l, nil
	})
	if err != nil {
		return nil, err
	}
	if err := s.finish(nil, o); err != nil {
		return nil, err
	}
	s.Spec = spec
	return s, nil
}

// openRemoteLower opens a config lower named by digest from the config's
// repoBlobUrl.
func openRemoteLower(c *Config, lc LowerConfig, o Options) (*Layer, error) {
	if c.RepoBlobURL == "" {
		return nil, fmt.Errorf("layer %s: remote layer but the config has no repoBlobUrl", lc.Digest)
	}
	ro := o.Remote
	if d := c.Download; d != nil {
		ro.Background = remote.BackgroundOptions{Enable: d.Enable, Delay: time.Duration(d.Delay) * time.Second, MaxBytesPerSec: d.MaxMBps << 20}
	}
	if c.RecordTracePath != "" {
		ro.RecordTrace = remote.TraceRecorderFor(c.RecordTracePath)
	}
	b, err := remote.OpenBlob(o.context(), c.RepoBlobURL, lc.Digest, lc.Size, ro)
	if err != nil {
		return nil, err
	}
	l, err := openBlobLayer(b, o)
	if err != nil {
		b.Close()
		return nil, err
	}
	return l, nil
}

func openBlobLayer(b *remote.Blob, o Options) (*Layer, error) {
	// The layer's headers are at the blob's start, its indexes at its end:
	// fetch both in one round trip before the reads that need them.
	b.FetchEnds()
	l, err := OpenLayer(b, b.Size(), b.Name(), b.Digest(), o)
	if err != nil {
		return nil, err
	}
	l.closer, l.blob = b, b
	return l, nil
}

func (o Options) context() context.Context {
	if o.Context != nil {
		return o.Context
	}
	return context.Background()
}
