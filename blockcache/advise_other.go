//go:build !linux

package blockcache

// adviseSlab does nothing where Linux's huge-page and populate advice do
// not exist: the slab works the same, its first touches just cost more.
func adviseSlab(m []byte) {}
