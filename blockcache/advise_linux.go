package blockcache

import "golang.org/x/sys/unix"

// adviseSlab asks for huge pages, or else pre-faulted ones, for a new slab.
// Best effort: either makes first touches cheap; neither is needed.
func adviseSlab(m []byte) {
	_ = unix.Madvise(m, unix.MADV_HUGEPAGE)
	_ = unix.Madvise(m, unix.MADV_POPULATE_WRITE)
}
