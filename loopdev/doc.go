// Package loopdev attaches regular files (obdfs stack files served over
// FUSE, for instance) to Linux loop block devices, detaches them and lists
// them.
//
// Attach uses LOOP_CONFIGURE (Linux 5.8+), which sets the backing file,
// flags and block size in one step, and falls back to LOOP_SET_FD followed
// by LOOP_SET_STATUS64, LOOP_SET_BLOCK_SIZE and LOOP_SET_DIRECT_IO on
// older kernels. Every LOOP_* ioctl is in ioctl_linux.go; the rest of the
// package sees Go types and errors. Listing reads sysfs
// (/sys/block/loopN/loop/*), which needs no privilege.
//
// Autoclear (LO_FLAGS_AUTOCLEAR) detaches the device when its last opener
// closes it. Attach itself opens the device, so a device attached with
// Autoclear and not opened by someone else before Attach returns is gone at
// once: use it when the caller keeps the device open (mount -o loop style),
// not for a command that prints the device name and exits.
package loopdev
