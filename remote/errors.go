package remote

import (
	"errors"
	"fmt"
)

var (
	// ErrNotOverlaybd is returned by Resolve for an image whose layers are
	// not native overlaybd layers.
	ErrNotOverlaybd = errors.New("not an overlaybd image")
	// ErrDigest means bytes of a blob did not hash to its digest.
	ErrDigest = errors.New("blob digest mismatch")
	// ErrClosed is returned by a Blob used after Close.
	ErrClosed = errors.New("blob is closed")
)

// FetchError is a range GET that failed after its retries.
type FetchError struct {
	URL    string
	Off    int64 // first byte asked for
	Len    int64
	Status int // HTTP status of the last attempt, 0 if none
	Err    error
}

func (e *FetchError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("fetch %s bytes %d-%d: HTTP %d: %v", e.URL, e.Off, e.Off+e.Len-1, e.Status, e.Err)
	}
	return fmt.Sprintf("fetch %s bytes %d-%d: %v", e.URL, e.Off, e.Off+e.Len-1, e.Err)
}

func (e *FetchError) Unwrap() error { return e.Err }
