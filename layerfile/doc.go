// Package layerfile owns overlaybd layer files as whole files, in both
// directions: it opens any of them from an io.ReaderAt and says what it is
// (tar-wrapped or not, ZFile-compressed or not, and whether the LSMT inside
// is a committed or sealed read-only layer, a writable layer's data or
// index file, or none at all), and it writes a layer file through the
// chosen containers, atomically.
//
// The formats themselves live in lsmt, zfile and tarwrap; this package
// only knows how they nest: tar outside, then ZFile, then LSMT (the order
// overlaybd's tools write and read them in).
package layerfile
