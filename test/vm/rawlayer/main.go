// Command rawlayer turns a raw disk image into an overlaybd writable layer
// (data + index files) holding its non-zero 4 KiB blocks, so the VM tests can
// commit it (obdfs commit -z) into a compressed layer:
//
//	rawlayer RAW DATA INDEX
package main

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/obdfs/obdfs/lsmt"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "rawlayer:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) != 4 {
		return fmt.Errorf("usage: rawlayer RAW DATA INDEX")
	}
	raw, err := os.Open(os.Args[1])
	if err != nil {
		return err
	}
	defer raw.Close()
	st, err := raw.Stat()
	if err != nil {
		return err
	}
	if st.Size()%512 != 0 {
		return fmt.Errorf("%s: size %d is not a multiple of 512", os.Args[1], st.Size())
	}
	rw, err := lsmt.Create(os.Args[2], os.Args[3], lsmt.CreateOptions{VirtualSize: st.Size()})
	if err != nil {
		return err
	}
	buf := make([]byte, 4096)
	zero := make([]byte, 4096)
	for off := int64(0); off < st.Size(); off += 4096 {
		n, err := raw.ReadAt(buf, off)
		if err != nil && err != io.EOF {
			rw.Close()
			return err
		}
		if !bytes.Equal(buf[:n], zero[:n]) {
			if _, err := rw.WriteAt(buf[:n], off); err != nil {
				rw.Close()
				return err
			}
		}
	}
	return rw.Close()
}
