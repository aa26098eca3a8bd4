// Package tarwrap peels and writes the tar wrapper around overlaybd layer
// blobs: one tar member holding the layer file (ZFile or LSMT).
//
// overlaybd writes a three-block PAX form (PAX header, one block of PAX
// records with the real size, a ustar header named overlaybd.commit whose size
// field is 0) and reads the data at a fixed offset: 1536 with a PAX header,
// 512 without one, as Go's archive/tar writes for a short name in USTAR
// format. GNU-format headers are not tar to overlaybd. See
// docs/format-tar.md and overlaybd src/overlaybd/tar/tar_file.cpp.
package tarwrap
