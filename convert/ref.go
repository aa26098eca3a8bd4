package convert

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	ggcr "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/obdfs/obdfs/remote"
)

const refNameAnnotation = "org.opencontainers.image.ref.name"

// RegistryOptions configure docker:// sources and destinations.
type RegistryOptions struct {
	Insecure bool // plain HTTP and unverified TLS allowed
	// Progress, if not nil, receives upload progress of a push.
	Progress func(done, total int64)
}

func (o RegistryOptions) remote(ctx context.Context) []ggcr.Option {
	t := ggcr.DefaultTransport.(*http.Transport).Clone()
	if o.Insecure {
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for with --insecure
	}
	return []ggcr.Option{ggcr.WithContext(ctx), ggcr.WithAuthFromKeychain(authn.DefaultKeychain), ggcr.WithTransport(t)}
}

func (o RegistryOptions) ref(s string) (name.Reference, error) {
	opts := []name.Option{name.WeakValidation}
	if o.Insecure {
		opts = append(opts, name.Insecure)
	}
	return name.ParseReference(strings.TrimPrefix(s, "docker://"), opts...)
}

// splitLayout splits oci:DIR[:TAG]. A DIR that exists as given wins over a
// trailing :TAG.
func splitLayout(spec string) (dir, tag string) {
	dir = strings.TrimPrefix(spec, "oci:")
	if st, err := os.Stat(dir); err == nil && st.IsDir() {
		return dir, ""
	}
	if i := strings.LastIndexByte(dir, ':'); i >= 0 && !strings.Contains(dir[i+1:], "/") {
		return dir[:i], dir[i+1:]
	}
	return dir, ""
}

// Open opens a source: docker://REF, oci:DIR[:TAG], or a `docker save`
// archive (a file path).
func Open(ctx context.Context, spec string, o RegistryOptions) (Source, error) {
	switch {
	case strings.HasPrefix(spec, "docker://"):
		ref, err := o.ref(spec)
		if err != nil {
			return Source{}, fmt.Errorf("source %q: %w", spec, err)
		}
		desc, err := ggcr.Get(ref, o.remote(ctx)...)
		if err != nil {
			return Source{}, fmt.Errorf("source %s: %w", spec, err)
		}
		if desc.MediaType.IsIndex() {
			idx, err := desc.ImageIndex()
			return Source{Index: idx}, err
		}
		img, err := desc.Image()
		return Source{Image: img}, err
	case strings.HasPrefix(spec, "oci:"):
		dir, tag := splitLayout(spec)
		p, err := layout.FromPath(dir)
		if err != nil {
			return Source{}, fmt.Errorf("source %s: %w", spec, err)
		}
		idx, err := p.ImageIndex()
		if err != nil {
			return Source{}, fmt.Errorf("source %s: %w", spec, err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return Source{}, fmt.Errorf("source %s: %w", spec, err)
		}
		var cands []v1.Descriptor
		for _, d := range im.Manifests {
			if tag == "" || d.Annotations[refNameAnnotation] == tag {
				cands = append(cands, d)
			}
		}
		switch {
		case len(cands) == 0 && tag != "":
			return Source{}, fmt.Errorf("source %s: no manifest tagged %q", spec, tag)
		case len(cands) == 0:
			return Source{}, fmt.Errorf("source %s: empty layout", spec)
		case len(cands) > 1:
			return Source{}, fmt.Errorf("source %s: %d manifests; name one with oci:DIR:TAG", spec, len(cands))
		}
		d := cands[0]
		if d.MediaType.IsIndex() {
			sub, err := idx.ImageIndex(d.Digest)
			return Source{Index: sub}, err
		}
		img, err := idx.Image(d.Digest)
		return Source{Image: img}, err
	}
	st, err := os.Stat(spec)
	if err != nil {
		return Source{}, fmt.Errorf("source %q: want docker://REF, oci:DIR[:TAG] or a docker save archive: %w", spec, err)
	}
	if !st.Mode().IsRegular() {
		return Source{}, fmt.Errorf("source %s: not a docker save archive (use oci:%s for an OCI layout)", spec, spec)
	}
	img, err := tarball.ImageFromPath(spec, nil)
	if err != nil {
		return Source{}, fmt.Errorf("source %s (docker save archive): %w", spec, err)
	}
	return Source{Image: img}, nil
}

// Write stores a converted image or index at docker://REF (a push) or
// oci:DIR[:TAG] (the layout is created if missing; TAG replaces an earlier
// manifest of that tag).
func Write(ctx context.Context, spec string, s Source, o RegistryOptions) error {
	switch {
	case strings.HasPrefix(spec, "docker://"):
		ref, err := o.ref(spec)
		if err != nil {
			return fmt.Errorf("destination %q: %w", spec, err)
		}
		opts := o.remote(ctx)
		if o.Progress != nil {
			popt, wait := remote.ProgressOption(o.Progress)
			defer wait()
			opts = append(opts, popt)
		}
		if s.Index != nil {
			err = ggcr.WriteIndex(ref, s.Index, opts...)
		} else {
			err = ggcr.Write(ref, s.Image, opts...)
		}
		if err != nil {
			return fmt.Errorf("destination %s: %w", spec, err)
		}
		return nil
	case strings.HasPrefix(spec, "oci:"):
		dir, tag := splitLayout(spec)
		p, err := layout.FromPath(dir)
		if err != nil {
			if p, err = layout.Write(dir, empty.Index); err != nil {
				return fmt.Errorf("destination %s: %w", spec, err)
			}
		}
		linkBlobs(dir, s)
		var opts []layout.Option
		m := match.Annotation(refNameAnnotation, tag)
		if tag != "" {
			opts = append(opts, layout.WithAnnotations(map[string]string{refNameAnnotation: tag}))
		}
		switch {
		case s.Index != nil && tag != "":
			err = p.ReplaceIndex(s.Index, m, opts...)
		case s.Index != nil:
			err = p.AppendIndex(s.Index, opts...)
		case tag != "":
			err = p.ReplaceImage(s.Image, m, opts...)
		default:
			err = p.AppendImage(s.Image, opts...)
		}
		if err != nil {
			return fmt.Errorf("destination %s: %w", spec, err)
		}
		return nil
	}
	return fmt.Errorf("destination %q: want docker://REF or oci:DIR[:TAG]", spec)
}
