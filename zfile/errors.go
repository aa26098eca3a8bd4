package zfile

import (
	"errors"
	"fmt"
)

var (
	// ErrFormat means the file is not a valid ZFile: bad magic, flags,
	// sizes or jump table.
	ErrFormat = errors.New("zfile: invalid format")
	// ErrChecksum means a header digest, index CRC or block CRC does not match.
	ErrChecksum = errors.New("zfile: checksum mismatch")
	// ErrCorrupt means a block failed to decompress to its exact size.
	ErrCorrupt = errors.New("zfile: corrupt block")
	// ErrUnsupported means a valid but unimplemented feature (dictionaries,
	// unknown algorithms).
	ErrUnsupported = errors.New("zfile: unsupported feature")
	// ErrBlockTooLarge is returned by the Writer when a stored block would
	// exceed MaxStoredBlock, which overlaybd cannot read.
	ErrBlockTooLarge = errors.New("zfile: stored block larger than 64 KiB")
)

// FormatError describes a fault in the header, trailer or index of a file.
// It unwraps to ErrFormat, ErrChecksum or ErrUnsupported.
type FormatError struct {
	File   string // name given with WithName
	Offset int64  // byte offset in the ZFile of the faulty structure or field
	Field  string // what is wrong, e.g. "trailer flags"
	Msg    string
	Err    error
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("zfile %s: %s at offset %d: %s", e.File, e.Field, e.Offset, e.Msg)
}

func (e *FormatError) Unwrap() error { return e.Err }

// BlockError is a failed read or check of one block. It unwraps to
// ErrChecksum, ErrCorrupt or the error of the backing reader.
type BlockError struct {
	File   string
	Block  int
	Offset int64 // byte offset of the stored block in the ZFile
	Err    error
}

func (e *BlockError) Error() string {
	return fmt.Sprintf("zfile %s: block %d at offset %d: %v", e.File, e.Block, e.Offset, e.Err)
}

func (e *BlockError) Unwrap() error { return e.Err }
