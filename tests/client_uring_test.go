package tests

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// uringConnect connects to an IPv4 addr through io_uring (IORING_OP_CONNECT),
// inline or, with async, on an io-wq worker thread (comm "iou-wrk-..."), then
// does the echo exchange. It speaks the raw interface (io_uring_setup,
// mmap'd rings, io_uring_enter) so no library stands between the test and
// the kernel.
func uringConnect(addr string, async bool) clientResult {
	_, sa, err := sockaddr("4", addr)
	if err != nil {
		return errResult(err)
	}
	in4 := sa.(*unix.SockaddrInet4)
	raw := make([]byte, 16) // struct sockaddr_in
	*(*uint16)(unsafe.Pointer(&raw[0])) = unix.AF_INET
	raw[2], raw[3] = byte(in4.Port>>8), byte(in4.Port)
	copy(raw[4:8], in4.Addr[:])

	var p [120]byte // struct io_uring_params
	ring, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&p[0])), 0)
	if errno != 0 {
		return errResult(fmt.Errorf("io_uring_setup: %w", errno))
	}
	defer unix.Close(int(ring))
	u32 := func(off int) uint32 { return *(*uint32)(unsafe.Pointer(&p[off])) }
	sqEntries, cqEntries := u32(0), u32(4)
	sqOff, cqOff := 40, 80 // io_sqring_offsets, io_cqring_offsets
	sqArray, cqes := u32(sqOff+24), u32(cqOff+20)
	sqSize := int(sqArray + sqEntries*4)
	if n := int(cqes + cqEntries*16); n > sqSize {
		sqSize = n // IORING_FEAT_SINGLE_MMAP (5.4+): one mapping holds both rings
	}
	rings, err := unix.Mmap(int(ring), 0, sqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return errResult(fmt.Errorf("mmap rings: %w", err))
	}
	defer unix.Munmap(rings)
	sqes, err := unix.Mmap(int(ring), 0x10000000, int(sqEntries*64), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return errResult(fmt.Errorf("mmap sqes: %w", err))
	}
	defer unix.Munmap(sqes)
	at := func(b []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }

	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return errResult(err)
	}
	tail := atomic.LoadUint32(at(rings, u32(sqOff+4)))
	idx := tail & atomic.LoadUint32(at(rings, u32(sqOff+8)))
	sqe := sqes[idx*64 : idx*64+64]
	clear(sqe)
	sqe[0] = 16 // IORING_OP_CONNECT
	if async {
		sqe[1] = 1 << 4 // IOSQE_ASYNC: run it on an io-wq worker
	}
	*(*int32)(unsafe.Pointer(&sqe[4])) = int32(fd)
	*(*uint64)(unsafe.Pointer(&sqe[8])) = uint64(len(raw))                          // off: addrlen
	*(*uint64)(unsafe.Pointer(&sqe[16])) = uint64(uintptr(unsafe.Pointer(&raw[0]))) // addr
	*at(rings, sqArray+idx*4) = idx
	atomic.StoreUint32(at(rings, u32(sqOff+4)), tail+1)
	_, _, errno = unix.Syscall6(unix.SYS_IO_URING_ENTER, ring, 1, 1, 1 /* IORING_ENTER_GETEVENTS */, 0, 0)
	runtime.KeepAlive(raw)
	if errno != 0 {
		unix.Close(fd)
		return errResult(fmt.Errorf("io_uring_enter: %w", errno))
	}
	head := atomic.LoadUint32(at(rings, u32(cqOff)))
	cqe := cqes + (head&atomic.LoadUint32(at(rings, u32(cqOff+8))))*16
	res := *(*int32)(unsafe.Pointer(&rings[cqe+8]))
	atomic.StoreUint32(at(rings, u32(cqOff)), head+1)
	if res < 0 {
		unix.Close(fd)
		return errResult(fmt.Errorf("io_uring connect: %w", unix.Errno(-res)))
	}
	if _, err := unix.Write(fd, []byte("ping\n")); err != nil {
		unix.Close(fd)
		return errResult(err)
	}
	return readEcho(fd)
}
