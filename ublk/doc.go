// Package ublk serves a disk.Disk as a Linux ublk block device
// (/dev/ublkbN), talking to the kernel driver through io_uring with raw
// syscalls (no cgo, no io_uring library). The ABI, the per-kernel behaviour
// and the pitfalls it works around are in docs/ublk-protocol.md.
//
// # Lifecycle
//
// Start opens /dev/ublk-control, asks GET_FEATURES (6.5+), sends ADD_DEV
// (ioctl-encoded, then the legacy code, so 6.1 works), SET_PARAMS, starts one
// goroutine per queue that FETCHes every tag, and only then START_DEV: the
// kernel reads the partition table through the queues before START_DEV
// returns, so the queues must already be serving. Any failure undoes every
// step (STOP_DEV, DEL_DEV), so no half-created device is left behind.
// Device.Close sends STOP_DEV while the queues still serve (the kernel may
// flush through them), waits for the queues to drain, then DEL_DEV.
//
// # Threads
//
// Every FETCH and COMMIT of a queue must be submitted by the same OS thread
// (the kernel records it as the queue daemon), so each queue goroutine locks
// its OS thread and owns its ring. Disk I/O runs on worker goroutines; their
// results come back to the queue goroutine through a completion list and an
// eventfd read queued on the same ring, and the queue goroutine commits them.
//
// # Data
//
// With UBLK_F_USER_COPY (6.5+, the default when offered) request data moves by
// pread/pwrite on /dev/ublkcN; otherwise each tag has a buffer whose address
// the kernel copies to and from. Either way the buffers are mmap'd, outside
// the Go heap.
//
// # Recovery
//
// Devices are created with UBLK_F_USER_RECOVERY|UBLK_F_USER_RECOVERY_REISSUE
// where offered (Options.NoRecovery turns it off): if the server dies the
// block device stays, I/O waits, and Recover takes the device over from a new
// process.
package ublk
