// Package lsmt reads and writes overlaybd's LSMT layer files ("layered
// sparse-mapped tree"), byte-compatible with containerd/overlaybd's C++ code
// (src/overlaybd/lsmt). The format is described in docs/format-lsmt.md.
//
// A layer maps sectors of a virtual disk (512-byte units) to sectors of the
// layer file through a sorted index of 16-byte records. Read-only (committed)
// layers are opened with NewFile over any io.ReaderAt (a plain file or a
// ZFile reader); writable layers are the append-only pair of a data file and
// an index log (Create, OpenRW). A Stack merges up to 255 read-only layers and
// an optional writable one into one disk.Disk. Commit turns a writable layer
// into a committed one, bytes identical to overlaybd-commit.
//
// # Units
//
// Record offsets, lengths and moffsets are sectors; header index_offset and
// virtual_size are bytes (docs/format-lsmt.md §1).
//
// # Parallelism
//
// File, RWFile and Stack reads may be called concurrently. On an RWFile
// WriteAt and Discard are serialized by a mutex (they append), and ReadAt may
// run alongside them: data once appended is never rewritten, so a reader that
// looked up the index under a read lock can read the data without a lock.
//
// # Writers and readers of a writable layer
//
// A writable layer has one writer at a time. OpenRW and Create hold an
// exclusive flock(2) lock on the data and index files until Close; any other
// writer (another process, or another open in the same process) is refused
// with an error naming the holder. Only the writer repairs a torn tail.
//
// OpenReadOnly never writes to the files. Its view of an append-only layer
// is the prefix of the index log present when it opened, which is
// consistent while a writer appends (a record is logged only after its
// data), so `obdfs cat` and `merge` work on a layer in use and see what was
// written before they started. Two cases are refused while a writer holds
// the layer instead (a shared lock): a sparse layer, which is rewritten in
// place and has no consistent snapshot, and ReadOnlyOptions.Quiesced, which
// commit uses so it never commits a disk in use.
package lsmt
