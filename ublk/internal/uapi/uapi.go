// Package uapi mirrors the ublk kernel ABI (include/uapi/linux/ublk_cmd.h):
// command codes, feature flags and the structs exchanged with the driver.
//
// Every layout and value is described in docs/ublk-protocol.md (§1–§2) and
// checked by uapi_test.go with unsafe.Sizeof/Offsetof. The structs are laid out
// for 64-bit targets with natural alignment; ublk is only built on those.
package uapi

import "unsafe"

// Control command numbers (_IOC_NR). The legacy encoding is the bare number;
// the ioctl encoding (6.4+) wraps it with CtrlIoctl. docs/ublk-protocol.md §1.3.
const (
	CmdGetQueueAffinity  = 0x01
	CmdGetDevInfo        = 0x02
	CmdAddDev            = 0x04
	CmdDelDev            = 0x05
	CmdStartDev          = 0x06
	CmdStopDev           = 0x07
	CmdSetParams         = 0x08
	CmdGetParams         = 0x09
	CmdStartUserRecovery = 0x10
	CmdEndUserRecovery   = 0x11
	CmdGetDevInfo2       = 0x12
	CmdGetFeatures       = 0x13 // ioctl form only, 6.5+
	CmdDelDevAsync       = 0x14 // ioctl form only, 6.9+
)

// I/O command numbers. docs/ublk-protocol.md §2.3.
const (
	IOFetchReq          = 0x20
	IOCommitAndFetchReq = 0x21
	IONeedGetData       = 0x22
)

const (
	iocWrite = 1
	iocRead  = 2
	iocType  = 'u'
)

func ioc(dir, nr, size uint32) uint32 { return dir<<30 | size<<16 | iocType<<8 | nr }

// readOnlyCmds are the control commands the kernel defines with _IOR; the
// rest are _IOWR. Only GET_FEATURES is compared to the full value by the
// kernel (docs/ublk-protocol.md §1.3), but every code is spelled as the header spells it.
var readOnlyCmds = map[uint32]bool{
	CmdGetQueueAffinity: true, CmdGetDevInfo: true, CmdGetParams: true,
	CmdGetDevInfo2: true, CmdGetFeatures: true, CmdDelDevAsync: true,
}

// CtrlIoctl is the ioctl-encoded control command code for nr.
func CtrlIoctl(nr uint32) uint32 {
	dir := uint32(iocRead | iocWrite)
	if readOnlyCmds[nr] {
		dir = iocRead
	}
	return ioc(dir, nr, uint32(unsafe.Sizeof(CtrlCmd{})))
}

// IOIoctl is the ioctl-encoded I/O command code for nr.
func IOIoctl(nr uint32) uint32 {
	return ioc(iocRead|iocWrite, nr, uint32(unsafe.Sizeof(IOCmd{})))
}

// Feature flags (dev_info.flags, GET_FEATURES). docs/ublk-protocol.md §1.6.
const (
	FSupportZeroCopy     = 1 << 0
	FURingCmdCompInTask  = 1 << 1
	FNeedGetData         = 1 << 2
	FUserRecovery        = 1 << 3
	FUserRecoveryReissue = 1 << 4
	FUnprivilegedDev     = 1 << 5
	FCmdIoctlEncode      = 1 << 6
	FUserCopy            = 1 << 7
	FZoned               = 1 << 8
	FUserRecoveryFailIO  = 1 << 9
)

// Device states (dev_info.state).
const (
	StateDead     = 0
	StateLive     = 1
	StateQuiesced = 2
	StateFailIO   = 3
)

// CtrlCmd is struct ublksrv_ctrl_cmd (32 bytes), placed at SQE byte 48.
type CtrlCmd struct {
	DevID      uint32
	QueueID    uint16
	Len        uint16
	Addr       uint64
	Data       uint64
	DevPathLen uint16
	Pad        uint16
	Reserved   uint32
}

// DevInfo is struct ublksrv_ctrl_dev_info (64 bytes).
type DevInfo struct {
	NrHwQueues    uint16
	QueueDepth    uint16
	State         uint16
	Pad0          uint16
	MaxIOBufBytes uint32
	DevID         uint32
	SrvPID        int32
	Pad1          uint32
	Flags         uint64
	SrvFlags      uint64
	OwnerUID      uint32
	OwnerGID      uint32
	Reserved1     uint64
	Reserved2     uint64
}

// Params types bits. docs/ublk-protocol.md §1.5.
const (
	ParamTypeBasic   = 1 << 0
	ParamTypeDiscard = 1 << 1
	ParamTypeDevt    = 1 << 2
)

// Basic attrs bits.
const (
	AttrReadOnly      = 1 << 0
	AttrRotational    = 1 << 1
	AttrVolatileCache = 1 << 2
	AttrFUA           = 1 << 3
)

// ParamBasic is struct ublk_param_basic (32 bytes).
type ParamBasic struct {
	Attrs            uint32
	LogicalBSShift   uint8
	PhysicalBSShift  uint8
	IOOptShift       uint8
	IOMinShift       uint8
	MaxSectors       uint32
	ChunkSectors     uint32
	DevSectors       uint64
	VirtBoundaryMask uint64
}

// ParamDiscard is struct ublk_param_discard (20 bytes, 4-aligned).
type ParamDiscard struct {
	DiscardAlignment      uint32
	DiscardGranularity    uint32
	MaxDiscardSectors     uint32
	MaxWriteZeroesSectors uint32
	MaxDiscardSegments    uint16
	Reserved0             uint16
}

// ParamDevt is struct ublk_param_devt (16 bytes).
type ParamDevt struct {
	CharMajor uint32
	CharMinor uint32
	DiskMajor uint32
	DiskMinor uint32
}

// Params is struct ublk_params as of 6.3–6.12 (112 bytes). The kernel
// truncates a longer struct and masks unknown types, and 6.1's 64-byte struct
// is a prefix of this one, so this layout works on every kernel we target.
type Params struct {
	Len     uint32
	Types   uint32
	Basic   ParamBasic
	Discard ParamDiscard
	Devt    ParamDevt
	_       uint32   // zoned is 8-aligned
	Zoned   [32]byte // unused: we never create zoned devices
}

// I/O operations (IODesc.OpFlags & 0xff). docs/ublk-protocol.md §2.2.
const (
	OpRead        = 0
	OpWrite       = 1
	OpFlush       = 2
	OpDiscard     = 3
	OpWriteSame   = 4
	OpWriteZeroes = 5
)

// IO flags (IODesc.OpFlags bits 8–31).
const (
	IOFFUA     = 1 << 13
	IOFNoUnmap = 1 << 15
)

// IODesc is struct ublksrv_io_desc (24 bytes), written by the kernel into the
// per-queue mmap'd array.
type IODesc struct {
	OpFlags     uint32
	NrSectors   uint32
	StartSector uint64
	Addr        uint64
}

// Op is the operation of the request.
func (d *IODesc) Op() uint8 { return uint8(d.OpFlags) }

// IOCmd is struct ublksrv_io_cmd (16 bytes), placed at SQE byte 48.
type IOCmd struct {
	QID    uint16
	Tag    uint16
	Result int32
	Addr   uint64
}

// CQE results of FETCH/COMMIT. docs/ublk-protocol.md §2.3.
const (
	IOResOK          = 0
	IOResNeedGetData = 1
	IOResAbort       = -19 // -ENODEV
)

// Sizes and offsets of the mmap'd and pread/pwrite regions.
// docs/ublk-protocol.md §2.2, §2.6, §2.7.
const (
	MaxQueueDepth  = 4096
	MaxNrQueues    = 4096
	IODescSize     = 24
	CmdBufOffset   = 0
	IOBufOffset    = 0x80000000
	IOBufBits      = 25 // bytes within one request
	TagBits        = 16
	QIDOffsetShift = IOBufBits + TagBits // 41
	SectorShift    = 9
)

// DescOffset is the mmap offset of queue q's descriptor array on /dev/ublkcN.
// The stride uses the maximum depth, not the real one (docs/ublk-protocol.md §2.2).
func DescOffset(q int, pageSize int) int64 {
	stride := (MaxQueueDepth*IODescSize + pageSize - 1) / pageSize * pageSize
	return CmdBufOffset + int64(q)*int64(stride)
}

// UserCopyOffset is the pread/pwrite offset on /dev/ublkcN of byte off of the
// request on (q, tag) in USER_COPY mode.
func UserCopyOffset(q, tag int, off int64) int64 {
	return IOBufOffset + int64(q)<<QIDOffsetShift + int64(tag)<<IOBufBits + off
}

// Bytes views a fixed-size ABI struct as its bytes, for copying into kernel-
// visible memory. T must be one of the structs of this package.
func Bytes[T CtrlCmd | DevInfo | Params | IOCmd | IODesc](v *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
}

// Ptr returns the address of b[0] as a kernel pointer value. b must be memory
// that does not move (mmap'd), and must stay alive while the kernel uses it.
func Ptr(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }

// DescAt reads descriptor tag from the mmap'd array.
func DescAt(arr []byte, tag int) IODesc {
	return *(*IODesc)(unsafe.Pointer(&arr[tag*IODescSize]))
}
