// Package zfile reads and writes overlaybd ZFiles: a file cut into fixed-size
// blocks, each compressed independently (LZ4 block format or one zstd frame),
// followed by a jump table of stored block lengths and a 512-byte trailer.
//
// The layout, the flag bits, the "raw" CRC32C checksums and the open/read
// rules follow containerd/overlaybd src/overlaybd/zfile/zfile.cpp as described
// in docs/format-zfile.md. Files written by this package open in
// overlaybd, and every ZFile overlaybd writes (including the 2021 base layer,
// whose reserved bytes and upper flag bits hold garbage) opens here.
//
// # Reading
//
// NewReader validates the header, trailer and jump table and returns a
// Reader, an io.ReaderAt over the decompressed content. ReadAt may be called
// concurrently; it reads the compressed bytes of consecutive blocks with one
// backing ReadAt per batch, checks each block's CRC32C (when the file has
// them) and decodes into the caller's buffer where a whole block is wanted.
// A block that fails its checksum or does not decode to its exact size is an
// error for every read that covers it (ErrChecksum or ErrCorrupt wrapped in a
// *BlockError); ReadAt never returns wrong bytes without an error. With
// WithCache, decoded blocks are shared through a blockcache.Cache: blocks
// read in part, and every block of a layer other Readers have open too; whole
// blocks of a layer only this Reader has open are decoded straight into the
// caller's buffer (caching them would cost fresh memory for no later hit).
//
// # Writing
//
// Writer produces what overlaybd-zfile and overlaybd-commit -z produce: a
// header (flags 0x13), the blocks with a CRC32C each, the index and a trailer
// (flags 0x16). FinalHeader gives the rewritten header (flags 0x1B) that
// overlaybd-commit stores at offset 0 once the trailer is known. LZ4 output is
// byte-identical to overlaybd's (both use LZ4_compress_default's algorithm);
// zstd output decodes the same but is not byte-identical to libzstd's.
package zfile
