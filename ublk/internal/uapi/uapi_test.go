package uapi

import (
	"testing"
	"unsafe"
)

// Sizes and offsets from docs/ublk-protocol.md §1.2, §1.4, §1.5, §2.2, §2.3.
func TestLayout(t *testing.T) {
	var (
		c  CtrlCmd
		di DevInfo
		p  Params
		pb ParamBasic
		pd ParamDiscard
		d  IODesc
		io IOCmd
	)
	tests := []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof ctrl_cmd", unsafe.Sizeof(c), 32},
		{"ctrl_cmd.queue_id", unsafe.Offsetof(c.QueueID), 4},
		{"ctrl_cmd.len", unsafe.Offsetof(c.Len), 6},
		{"ctrl_cmd.addr", unsafe.Offsetof(c.Addr), 8},
		{"ctrl_cmd.data", unsafe.Offsetof(c.Data), 16},
		{"ctrl_cmd.dev_path_len", unsafe.Offsetof(c.DevPathLen), 24},
		{"sizeof dev_info", unsafe.Sizeof(di), 64},
		{"dev_info.state", unsafe.Offsetof(di.State), 4},
		{"dev_info.max_io_buf_bytes", unsafe.Offsetof(di.MaxIOBufBytes), 8},
		{"dev_info.dev_id", unsafe.Offsetof(di.DevID), 12},
		{"dev_info.ublksrv_pid", unsafe.Offsetof(di.SrvPID), 16},
		{"dev_info.flags", unsafe.Offsetof(di.Flags), 24},
		{"dev_info.ublksrv_flags", unsafe.Offsetof(di.SrvFlags), 32},
		{"dev_info.owner_uid", unsafe.Offsetof(di.OwnerUID), 40},
		{"sizeof params", unsafe.Sizeof(p), 112},
		{"params.types", unsafe.Offsetof(p.Types), 4},
		{"params.basic", unsafe.Offsetof(p.Basic), 8},
		{"params.discard", unsafe.Offsetof(p.Discard), 40},
		{"params.devt", unsafe.Offsetof(p.Devt), 60},
		{"params.zoned", unsafe.Offsetof(p.Zoned), 80},
		{"sizeof basic", unsafe.Sizeof(pb), 32},
		{"basic.logical_bs_shift", unsafe.Offsetof(pb.LogicalBSShift), 4},
		{"basic.max_sectors", unsafe.Offsetof(pb.MaxSectors), 8},
		{"basic.dev_sectors", unsafe.Offsetof(pb.DevSectors), 16},
		{"basic.virt_boundary_mask", unsafe.Offsetof(pb.VirtBoundaryMask), 24},
		{"sizeof discard", unsafe.Sizeof(pd), 20},
		{"discard.max_write_zeroes_sectors", unsafe.Offsetof(pd.MaxWriteZeroesSectors), 12},
		{"discard.max_discard_segments", unsafe.Offsetof(pd.MaxDiscardSegments), 16},
		{"sizeof io_desc", unsafe.Sizeof(d), 24},
		{"io_desc.start_sector", unsafe.Offsetof(d.StartSector), 8},
		{"io_desc.addr", unsafe.Offsetof(d.Addr), 16},
		{"sizeof io_cmd", unsafe.Sizeof(io), 16},
		{"io_cmd.tag", unsafe.Offsetof(io.Tag), 2},
		{"io_cmd.result", unsafe.Offsetof(io.Result), 4},
		{"io_cmd.addr", unsafe.Offsetof(io.Addr), 8},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %d, want %d", tt.name, tt.got, tt.want)
		}
	}
}

// Command codes from the tables in docs/ublk-protocol.md §1.3 and §2.3.
func TestCommandCodes(t *testing.T) {
	tests := []struct {
		name string
		got  uint32
		want uint32
	}{
		{"GET_QUEUE_AFFINITY", CtrlIoctl(CmdGetQueueAffinity), 0x80207501},
		{"GET_DEV_INFO", CtrlIoctl(CmdGetDevInfo), 0x80207502},
		{"ADD_DEV", CtrlIoctl(CmdAddDev), 0xC0207504},
		{"DEL_DEV", CtrlIoctl(CmdDelDev), 0xC0207505},
		{"START_DEV", CtrlIoctl(CmdStartDev), 0xC0207506},
		{"STOP_DEV", CtrlIoctl(CmdStopDev), 0xC0207507},
		{"SET_PARAMS", CtrlIoctl(CmdSetParams), 0xC0207508},
		{"GET_PARAMS", CtrlIoctl(CmdGetParams), 0x80207509},
		{"START_USER_RECOVERY", CtrlIoctl(CmdStartUserRecovery), 0xC0207510},
		{"END_USER_RECOVERY", CtrlIoctl(CmdEndUserRecovery), 0xC0207511},
		{"GET_DEV_INFO2", CtrlIoctl(CmdGetDevInfo2), 0x80207512},
		{"GET_FEATURES", CtrlIoctl(CmdGetFeatures), 0x80207513},
		{"DEL_DEV_ASYNC", CtrlIoctl(CmdDelDevAsync), 0x80207514},
		{"FETCH_REQ", IOIoctl(IOFetchReq), 0xC0107520},
		{"COMMIT_AND_FETCH_REQ", IOIoctl(IOCommitAndFetchReq), 0xC0107521},
		{"NEED_GET_DATA", IOIoctl(IONeedGetData), 0xC0107522},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %#x, want %#x", tt.name, tt.got, tt.want)
		}
	}
}

func TestOffsets(t *testing.T) {
	tests := []struct {
		name      string
		got, want int64
	}{
		{"desc q0", DescOffset(0, 4096), 0},
		{"desc q1 4K pages", DescOffset(1, 4096), 98304},
		{"desc q3 16K pages", DescOffset(3, 16384), 3 * 98304},
		{"desc q1 64K pages", DescOffset(1, 65536), 131072},
		{"user copy q0 t0", UserCopyOffset(0, 0, 0), 0x80000000},
		{"user copy q0 t1 +512", UserCopyOffset(0, 1, 512), 0x80000000 + 1<<25 + 512},
		{"user copy q2 t3", UserCopyOffset(2, 3, 0), 0x80000000 + 2<<41 + 3<<25},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %#x, want %#x", tt.name, tt.got, tt.want)
		}
	}
}
