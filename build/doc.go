// Package build makes overlaybd layers from file trees: a writable LSMT
// layer over the layers below it, served in-process over FUSE, attached to a
// loop device and mounted as ext4 (made on the first layer, as
// accelerated-container-image does), written through the kernel's
// filesystem, then unmounted and committed.
//
// Apply extracts an OCI layer tar into a directory with the image-spec's
// whiteout rules and full metadata, resolving every path inside the root so
// that no entry can write outside it.
//
// Everything here needs root (FUSE, loop devices, mount); NewLayer says so
// with ErrNotRoot.
package build
