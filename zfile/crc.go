package zfile

import "hash/crc32"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c is overlaybd's "raw" CRC32C: the Castagnoli register updated from
// seed without the usual initial and final inversion (docs/format-zfile.md §4). Go's crc32
// inverts on the way in and out, so invert around it to cancel both.
func crc32c(seed uint32, p []byte) uint32 {
	return ^crc32.Update(^seed, castagnoli, p)
}

// CRC32C returns overlaybd's raw CRC32C of p starting from seed: 0 for the
// header digest and index CRC, BlockCRCSeed for blocks.
func CRC32C(seed uint32, p []byte) uint32 { return crc32c(seed, p) }
