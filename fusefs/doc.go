// Package fusefs serves virtual disks (disk.Disk) as regular files in a
// one-directory FUSE filesystem: each stack is the file ROOT/NAME, sized to
// the disk's virtual size, with the owner and mode given to AddPerm (0644 by
// default; a read-only disk never has write bits). The kernel checks them
// (default_permissions); only with MountOptions.AllowOther can users other
// than the mounter open anything.
//
// # Requests
//
// Reads fill the buffer go-fuse hands in (disk.ReadAt(dest, off)); writes go
// to disk.WriteAt; fsync and fdatasync call disk.Flush; fallocate with
// FALLOC_FL_PUNCH_HOLE or FALLOC_FL_ZERO_RANGE calls disk.Discard. Requests
// run in parallel (go-fuse starts a goroutine per request), so a Disk must
// serve concurrent ReadAt/WriteAt, as its contract says. A read or write
// error other than a short read at the end is logged with the stack name,
// offset and length (the disk's error names layer and offset) and becomes
// EIO for that request only.
//
// The size never changes: a truncate to another size fails with EPERM,
// a write past the end with ENOSPC.
//
// # Kernel caching
//
// Read-only stacks are opened with FOPEN_KEEP_CACHE: their content never
// changes while the inode lives (a removed and re-added stack is a new
// inode), so the page cache stays valid across opens. Writable stacks are
// not: the page cache stays coherent while open (write-through, and the
// kernel drops punched ranges itself), but it is dropped at each open so a
// restart of the daemon on the same layers can never show stale pages.
// Attributes and entries are cached for a minute; Add and Remove send entry
// notifications so a new or removed stack shows at once.
//
// # Locks
//
// POSIX and OFD locks (qemu locks its image files) are not forwarded: the
// kernel handles them locally on the FUSE inode, which is exact for a
// filesystem whose only clients are on this host.
//
// # Deadlocks
//
// The process that serves the mount must not itself read the files it
// serves from a FUSE request (it would wait for itself). Add and Remove send
// kernel notifications, so they must not be called from inside a FUSE
// request handler either; the control socket calls them from its own
// goroutines.
package fusefs
