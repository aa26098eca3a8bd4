// Package server is the obdfs daemon: it opens stacks, serves them as files
// of one FUSE mount (package fusefs), and answers a control socket through
// which stacks are added, removed, listed and their statistics read.
//
// The socket lives outside the mount, at a path derived from the
// mountpoint (SocketPath), so a client knows where to find the daemon of a
// mountpoint and a dead mount never blocks the socket. The protocol is one
// JSON Request and one JSON Response per connection.
//
// Shutdown order: writable stacks are flushed, the mount is removed, then
// every stack is flushed again and closed. When the mount is removed from
// outside (umount(8)), the stacks are flushed and closed once the kernel
// ends the FUSE session.
package server
