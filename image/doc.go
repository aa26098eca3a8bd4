// Package image opens what users name on the command line — a STACK — as
// one virtual disk: a chain of overlaybd layers, each peeled from its
// containers (tar wrapper → ZFile → LSMT, each optional but the last) and
// merged, with an optional writable upper layer on top.
//
// A STACK is an overlaybd image config (a *.json file with lowers/upper, spec
// docs/image-config.md §1) or layer files separated by commas, bottom first.
package image
