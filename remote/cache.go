package remote

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math/bits"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/obdfs/obdfs/internal/atomicfile"
)

// The .map file beside each cached blob:
//
//	0   8  magic "OBDFSMAP"
//	8   4  version (2), little endian
//	12  4  flags: bit 0 = the complete blob matched its digest
//	16  8  blob size
//	24  8  chunk size (the RefillSize it was written with)
//	32  n  bitmap, one bit per chunk (bit i%8 of byte i/8), n = ceil(chunks/8)
//	32+n 4c CRC32C of each chunk as fetched (0 for a chunk not present), c = chunks
//	.. 4   CRC32C of everything before it
//
// A map that fails any check is ignored (the blob is fetched again), and so
// is a version 1 map, which has no chunk sums.
//
// The chunk sums are what lets a cached copy be checked before it is
// served: a chunk's bytes are summed when they arrive from the registry (a
// ZFile layer's blocks also carry their own CRC; a raw LSMT layer's bytes
// have nothing else), and every chunk read from the cache after the blob is
// opened is summed again once before its first use. A chunk that does not
// match (a flipped bit on disk, a file changed behind our back) is dropped
// and fetched again. The sums find damage, not forgery: the cache is private
// (0700/0600) and only the whole-blob sha256 (Fetch, CheckDigest, `obdfs
// pull`, `obdfs cache verify`) ties its content to the registry's digest.
const (
	mapMagic       = "OBDFSMAP"
	mapVersion     = 2
	mapHeaderSize  = 32
	mapFlagVerfied = 1

	// persistEvery bounds how much fetched data a crash can cost: the map is
	// rewritten at most this often while chunks arrive (and on Close).
	persistEvery = time.Second
	// evictEvery rate-limits the scans for eviction.
	evictEvery = time.Second
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// cacheDir is one cache directory, shared by every Blob of the process that
// uses it.
type cacheDir struct {
	dir string
	max int64

	mu        sync.Mutex
	open      map[string]int // digest hex -> open cacheFiles in this process
	usage     atomic.Int64   // approximate bytes on disk
	scanned   bool
	lastEvict time.Time
	evicting  atomic.Bool
}

var cacheDirs = struct {
	sync.Mutex
	m map[string]*cacheDir
}{m: map[string]*cacheDir{}}

// cacheDirFor returns the process-wide state of dir; max is updated to the
// latest value asked for.
func cacheDirFor(dir string, max int64) (*cacheDir, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("cache dir %s: %w", dir, err)
	}
	if err := os.MkdirAll(filepath.Join(abs, "blobs", "sha256"), 0o700); err != nil {
		return nil, fmt.Errorf("cache dir: %w", err)
	}
	cacheDirs.Lock()
	defer cacheDirs.Unlock()
	c := cacheDirs.m[abs]
	if c == nil {
		c = &cacheDir{dir: abs, open: map[string]int{}}
		cacheDirs.m[abs] = c
	}
	c.mu.Lock()
	c.max = max
	c.mu.Unlock()
	return c, nil
}

func (c *cacheDir) dataPath(hexd string) string {
	return filepath.Join(c.dir, "blobs", "sha256", hexd)
}

// cacheFile is the cached copy of one blob, open in this process.
type cacheFile struct {
	c     *cacheDir
	hex   string
	want  []byte // sha256 the content must hash to
	path  string
	f     *os.File // holds a shared flock while open
	size  int64
	chunk int64
	n     int64 // number of chunks

	mu          sync.Mutex
	bits        []uint64
	sums        []uint32 // CRC32C of each present chunk as fetched
	checked     []uint64 // chunks whose bytes matched their sum since open
	have        int64    // chunks present
	verified    bool
	dirty       bool
	lastPersist time.Time

	persistMu sync.Mutex // serialises map rewrites
	verifyMu  sync.Mutex // serialises digest checks
	checkMu   sync.Mutex // serialises chunk sum checks
	// damaged counts cached chunks dropped for a wrong sum.
	damaged    atomic.Int64
	verifyWG   sync.WaitGroup // background digest checks and map saves
	closed     bool
	persisting atomic.Bool
	// mismatches counts complete copies dropped for a wrong digest.
	mismatches atomic.Int64
}

// splitDigest checks "sha256:<64 hex>" and returns the hex and raw sum.
func splitDigest(d string) (string, []byte, error) {
	algo, h, ok := strings.Cut(d, ":")
	if !ok || algo != "sha256" {
		return "", nil, fmt.Errorf("digest %q: only sha256 digests are supported", d)
	}
	raw, err := hex.DecodeString(h)
	if err != nil || len(raw) != sha256.Size || strings.ToLower(h) != h {
		return "", nil, fmt.Errorf("digest %q: not 64 lower-case hex digits", d)
	}
	return h, raw, nil
}

// cachedSize returns the blob size recorded in a valid map, or 0.
func (c *cacheDir) cachedSize(hexd string) int64 {
	m, err := readMap(c.dataPath(hexd) + ".map")
	if err != nil {
		return 0
	}
	return m.size
}

// openFile opens (creating if needed) the cache file of a blob and loads its
// map. The caller must close it.
func (c *cacheDir) openFile(hexd string, want []byte, size, chunk int64) (*cacheFile, error) {
	path := c.dataPath(hexd)
	var f *os.File
	// Take a shared lock, and make sure the file we locked is still the one
	// at path: an evicter may have unlinked it between our open and lock.
	for try := 0; ; try++ {
		var err error
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("cache %s: %w", path, err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_SH); err != nil {
			f.Close()
			return nil, fmt.Errorf("cache %s: flock: %w", path, err)
		}
		var a, b unix.Stat_t
		if unix.Fstat(int(f.Fd()), &a) == nil && unix.Stat(path, &b) == nil && a.Ino == b.Ino && a.Dev == b.Dev {
			break
		}
		f.Close()
		if try > 10 {
			return nil, fmt.Errorf("cache %s: file keeps being replaced", path)
		}
	}
	cf := &cacheFile{c: c, hex: hexd, want: want, path: path, f: f, size: size, chunk: chunk}
	cf.n = (size + chunk - 1) / chunk
	cf.bits = make([]uint64, (cf.n+63)/64)
	cf.checked = make([]uint64, (cf.n+63)/64)
	cf.sums = make([]uint32, cf.n)
	if m, err := readMap(path + ".map"); err == nil && m.size == size && m.chunk == chunk {
		st, serr := f.Stat()
		if serr == nil && st.Size() == size {
			copyBits(cf.bits, m.bitmap, cf.n)
			for i := range cf.sums {
				cf.sums[i] = binary.LittleEndian.Uint32(m.sums[4*i:])
			}
			cf.verified = m.flags&mapFlagVerfied != 0
			for _, w := range cf.bits {
				cf.have += int64(bits.OnesCount64(w))
			}
		}
	} else if err == nil {
		slog.Info("remote cache: map does not match, starting afresh", "file", path,
			"size", m.size, "want_size", size, "chunk", m.chunk, "want_chunk", chunk)
	}
	if st, err := f.Stat(); err != nil || st.Size() != size {
		if err := f.Truncate(size); err != nil {
			f.Close()
			return nil, fmt.Errorf("cache %s: %w", path, err)
		}
	}
	now := time.Now()
	_ = os.Chtimes(path, now, now) // the mtime orders eviction
	c.mu.Lock()
	c.open[hexd]++
	c.mu.Unlock()
	c.maybeEvict()
	return cf, nil
}

func copyBits(dst []uint64, src []byte, n int64) {
	for i := int64(0); i < n; i++ {
		if src[i/8]&(1<<(i%8)) != 0 {
			dst[i/64] |= 1 << (i % 64)
		}
	}
}

func (cf *cacheFile) present(i int64) bool {
	cf.mu.Lock()
	ok := cf.bits[i/64]&(1<<(i%64)) != 0
	cf.mu.Unlock()
	return ok
}

// missing returns the first chunk in [from, to] that is not present, or -1.
func (cf *cacheFile) firstMissing(from, to int64) int64 {
	cf.mu.Lock()
	defer cf.mu.Unlock()
	for i := from; i <= to; i++ {
		if cf.bits[i/64]&(1<<(i%64)) == 0 {
			return i
		}
	}
	return -1
}

func (cf *cacheFile) presentBytes() int64 {
	cf.mu.Lock()
	defer cf.mu.Unlock()
	h := cf.have * cf.chunk
	if cf.n > 0 && cf.bits[(cf.n-1)/64]&(1<<((cf.n-1)%64)) != 0 {
		h -= cf.n*cf.chunk - cf.size // the last chunk is short
	}
	return h
}

// store writes chunk i (p holds all of it: chunk bytes, fewer for the last)
// and marks it present.
func (cf *cacheFile) store(i int64, p []byte) error {
	sum := crc32.Checksum(p, crcTable)
	if _, err := cf.f.WriteAt(p, i*cf.chunk); err != nil {
		return fmt.Errorf("cache %s: write: %w", cf.path, err)
	}
	cf.mu.Lock()
	if cf.closed {
		cf.mu.Unlock()
		return ErrClosed
	}
	w, m := &cf.bits[i/64], uint64(1)<<(i%64)
	added := *w&m == 0
	if added {
		*w |= m
		cf.have++
		cf.dirty = true
		cf.sums[i] = sum
		cf.checked[i/64] |= m // these are the bytes just summed
	}
	complete := cf.have == cf.n && !cf.verified
	due := cf.dirty && time.Since(cf.lastPersist) >= persistEvery
	cf.mu.Unlock()
	if added {
		cf.c.usage.Add(int64(len(p)))
		cf.c.maybeEvict()
	}
	if complete {
		// Hash in the background: the reader that completed the blob is
		// waiting for its chunk, not for the check.
		cf.verifyWG.Go(func() {
			if err := cf.verify(); err != nil {
				slog.Error("remote cache: complete blob failed its digest check; dropped", "file", cf.path, "err", err)
			}
		})
	} else if due && cf.persisting.CompareAndSwap(false, true) {
		// Off the reader's path: the fsyncs cost milliseconds.
		cf.verifyWG.Go(func() {
			defer cf.persisting.Store(false)
			if err := cf.persist(); err != nil {
				slog.Warn("remote cache: saving the map failed (fetched data will be fetched again after a restart)", "err", err)
			}
		})
	}
	return nil
}

// invalidate forgets the chunks overlapping [off, off+length) and records
// that on disk at once, so a restart does not trust them either.
func (cf *cacheFile) invalidate(off, length int64) error {
	if length <= 0 || off >= cf.size {
		return nil
	}
	first, last := off/cf.chunk, min(off+length-1, cf.size-1)/cf.chunk
	cf.mu.Lock()
	for i := max(first, 0); i <= last; i++ {
		w, m := &cf.bits[i/64], uint64(1)<<(i%64)
		if *w&m != 0 {
			*w &^= m
			cf.have--
		}
		cf.checked[i/64] &^= m
	}
	cf.verified = false
	cf.dirty = true
	cf.mu.Unlock()
	return cf.persist()
}

// checkChunks sums the present chunks of [first, last] not checked since
// the blob was opened and drops those that do not match the sum recorded
// when they were fetched; it reports whether any was dropped (the caller
// fetches them again). Each chunk is read and summed once per open.
func (cf *cacheFile) checkChunks(first, last int64) (dropped bool, err error) {
	if cf.allChecked(first, last) {
		return false, nil
	}
	cf.checkMu.Lock()
	defer cf.checkMu.Unlock()
	bufp := getChunkBuf(cf.chunk)
	defer putChunkBuf(cf.chunk, bufp)
	for i := first; i <= last; i++ {
		cf.mu.Lock()
		m := uint64(1) << (i % 64)
		todo := cf.bits[i/64]&m != 0 && cf.checked[i/64]&m == 0
		want := cf.sums[i]
		cf.mu.Unlock()
		if !todo {
			continue
		}
		p := (*bufp)[:min(cf.chunk, cf.size-i*cf.chunk)]
		if _, err := cf.f.ReadAt(p, i*cf.chunk); err != nil {
			return dropped, fmt.Errorf("cache %s: reading chunk %d: %w", cf.path, i, err)
		}
		got := crc32.Checksum(p, crcTable)
		bad := false
		cf.mu.Lock()
		switch {
		case cf.bits[i/64]&m == 0 || cf.sums[i] != want:
			// Dropped or refetched meanwhile: nothing to say.
		case got == want:
			cf.checked[i/64] |= m
		default:
			cf.bits[i/64] &^= m
			cf.have--
			cf.verified = false
			cf.dirty = true
			dropped, bad = true, true
		}
		cf.mu.Unlock()
		if bad {
			cf.damaged.Add(1)
			slog.Warn("remote cache: a cached chunk does not match the sum recorded when it was fetched; fetching it again",
				"file", cf.path, "chunk", i, "offset", i*cf.chunk, "want_crc32c", want, "got", got)
		}
	}
	if dropped {
		return true, cf.persist()
	}
	return false, nil
}

// allChecked reports whether every chunk of [first, last] was checked.
func (cf *cacheFile) allChecked(first, last int64) bool {
	cf.mu.Lock()
	defer cf.mu.Unlock()
	for i := first; i <= last; i++ {
		if cf.checked[i/64]&(1<<(i%64)) == 0 {
			return false
		}
	}
	return true
}

// verify hashes a complete blob unless it was found to match before. On a
// mismatch every chunk is dropped.
func (cf *cacheFile) verify() error { return cf.hash(false) }

// rehash hashes a complete blob even if it matched before: the bytes on
// disk may have changed since.
func (cf *cacheFile) rehash() error { return cf.hash(true) }

func (cf *cacheFile) hash(again bool) error {
	cf.verifyMu.Lock()
	defer cf.verifyMu.Unlock()
	cf.mu.Lock()
	done, complete := cf.verified, cf.have == cf.n
	cf.mu.Unlock()
	if done && !again {
		return nil
	}
	if !complete {
		return fmt.Errorf("cache %s: %w", cf.path, errIncomplete)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(cf.f, 0, cf.size)); err != nil {
		return fmt.Errorf("cache %s: hashing: %w", cf.path, err)
	}
	if got := h.Sum(nil); string(got) != string(cf.want) {
		cf.mu.Lock()
		clear(cf.bits)
		clear(cf.checked)
		cf.have = 0
		cf.dirty = true
		cf.mu.Unlock()
		cf.mismatches.Add(1)
		if err := cf.persist(); err != nil {
			return err
		}
		return fmt.Errorf("cache %s: content hashes to sha256:%x: %w", cf.path, got, ErrDigest)
	}
	cf.mu.Lock()
	// A chunk may have been invalidated while we hashed: then the result
	// says nothing about what is cached now.
	if cf.have == cf.n {
		cf.verified = true
		cf.dirty = true
	}
	cf.mu.Unlock()
	return cf.persist()
}

// persist makes the data durable, then atomically replaces the map with the
// state snapshotted before the sync.
func (cf *cacheFile) persist() error {
	cf.persistMu.Lock()
	defer cf.persistMu.Unlock()
	cf.mu.Lock()
	if !cf.dirty {
		cf.mu.Unlock()
		return nil
	}
	nb := (cf.n + 7) / 8
	buf := make([]byte, mapHeaderSize+nb+4*cf.n+4)
	copy(buf, mapMagic)
	binary.LittleEndian.PutUint32(buf[8:], mapVersion)
	if cf.verified {
		binary.LittleEndian.PutUint32(buf[12:], mapFlagVerfied)
	}
	binary.LittleEndian.PutUint64(buf[16:], uint64(cf.size))
	binary.LittleEndian.PutUint64(buf[24:], uint64(cf.chunk))
	bm := buf[mapHeaderSize : mapHeaderSize+nb]
	sums := buf[mapHeaderSize+nb : len(buf)-4]
	for i := int64(0); i < cf.n; i++ {
		if cf.bits[i/64]&(1<<(i%64)) != 0 {
			bm[i/8] |= 1 << (i % 8)
			binary.LittleEndian.PutUint32(sums[4*i:], cf.sums[i])
		}
	}
	cf.dirty = false
	cf.lastPersist = time.Now()
	cf.mu.Unlock()
	binary.LittleEndian.PutUint32(buf[len(buf)-4:], crc32.Checksum(buf[:len(buf)-4], crcTable))

	fail := func(err error) error {
		cf.mu.Lock()
		cf.dirty = true
		cf.mu.Unlock()
		return fmt.Errorf("cache %s: saving map: %w", cf.path, err)
	}
	if err := datasync(cf.f); err != nil {
		return fail(err)
	}
	if err := atomicfile.WriteFile(cf.path+".map", buf, 0o600); err != nil {
		return fail(err)
	}
	return nil
}

// close saves the map and releases the file (and its lock).
func (cf *cacheFile) close() error {
	cf.verifyWG.Wait()
	err := cf.persist()
	cf.mu.Lock()
	cf.closed = true
	cf.mu.Unlock()
	now := time.Now()
	_ = os.Chtimes(cf.path, now, now)
	if cerr := cf.f.Close(); err == nil {
		err = cerr
	}
	c := cf.c
	c.mu.Lock()
	if c.open[cf.hex]--; c.open[cf.hex] <= 0 {
		delete(c.open, cf.hex)
	}
	c.mu.Unlock()
	c.maybeEvict()
	return err
}

type mapFile struct {
	flags       uint32
	size, chunk int64
	bitmap      []byte
	sums        []byte // 4 bytes per chunk
}

var (
	errBadMap     = errors.New("bad cache map")
	errIncomplete = errors.New("blob is not complete")
)

func readMap(path string) (mapFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return mapFile{}, err
	}
	return parseMap(b)
}

func parseMap(b []byte) (mapFile, error) {
	if len(b) < mapHeaderSize+4 || string(b[:8]) != mapMagic || binary.LittleEndian.Uint32(b[8:]) != mapVersion {
		return mapFile{}, errBadMap
	}
	if crc32.Checksum(b[:len(b)-4], crcTable) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return mapFile{}, errBadMap
	}
	m := mapFile{
		flags: binary.LittleEndian.Uint32(b[12:]),
		size:  int64(binary.LittleEndian.Uint64(b[16:])),
		chunk: int64(binary.LittleEndian.Uint64(b[24:])),
	}
	if m.size <= 0 || m.size > 1<<56 || m.chunk <= 0 || m.chunk > 1<<30 || m.chunk&(m.chunk-1) != 0 {
		return mapFile{}, errBadMap
	}
	n := (m.size + m.chunk - 1) / m.chunk
	nb := (n + 7) / 8
	if int64(len(b)) != mapHeaderSize+nb+4*n+4 {
		return mapFile{}, errBadMap
	}
	m.bitmap = b[mapHeaderSize : mapHeaderSize+nb]
	m.sums = b[mapHeaderSize+nb : len(b)-4]
	return m, nil
}

// maybeEvict removes least recently used blobs not in use while the cache
// holds more than its bound. Cheap when under the bound; scans at most once
// per evictEvery.
func (c *cacheDir) maybeEvict() {
	c.mu.Lock()
	need := !c.scanned || (c.usage.Load() > c.max && time.Since(c.lastEvict) >= evictEvery)
	c.mu.Unlock()
	if !need || !c.evicting.CompareAndSwap(false, true) {
		return
	}
	defer c.evicting.Store(false)
	c.evict()
}

type cachedBlob struct {
	hex   string
	bytes int64
	mtime time.Time
}

func (c *cacheDir) evict() {
	dir := filepath.Join(c.dir, "blobs", "sha256")
	ents, err := os.ReadDir(dir)
	if err != nil {
		slog.Warn("remote cache: scan failed", "dir", dir, "err", err)
		return
	}
	var blobs []cachedBlob
	var total int64
	for _, e := range ents {
		name := e.Name()
		st, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		used := diskUsage(st)
		if strings.Contains(name, ".map.tmp") && time.Since(st.ModTime()) > time.Hour {
			os.Remove(filepath.Join(dir, name)) // left by a crash
			continue
		}
		total += used
		if len(name) == 64 && st.Mode().IsRegular() {
			mapUsed := int64(0)
			if ms, err := os.Lstat(filepath.Join(dir, name+".map")); err == nil {
				mapUsed = diskUsage(ms)
			}
			blobs = append(blobs, cachedBlob{hex: name, bytes: used + mapUsed, mtime: st.ModTime()})
		}
	}
	c.mu.Lock()
	c.scanned = true
	c.lastEvict = time.Now()
	max := c.max
	c.mu.Unlock()
	if total > max {
		sort.Slice(blobs, func(i, j int) bool { return blobs[i].mtime.Before(blobs[j].mtime) })
		for _, b := range blobs {
			if total <= max {
				break
			}
			if c.removeIfUnused(b.hex) {
				total -= b.bytes
				slog.Debug("remote cache: evicted", "blob", b.hex, "bytes", b.bytes)
			}
		}
	}
	c.usage.Store(total)
}

// removeIfUnused deletes a cached blob unless this or another process has it
// open (a shared flock on the data file).
func (c *cacheDir) removeIfUnused(hexd string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open[hexd] > 0 {
		return false
	}
	path := c.dataPath(hexd)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		return false
	}
	// Map first: a data file without a map is just an empty cache entry.
	os.Remove(path + ".map")
	return os.Remove(path) == nil
}

// diskUsage is the space a file takes (sparse files count what is allocated).
func diskUsage(st os.FileInfo) int64 {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return sys.Blocks * 512
	}
	return st.Size()
}

// CacheCheck is what VerifyCache found for one cached blob.
type CacheCheck struct {
	Digest   string
	Size     int64
	Present  int64 // bytes of the blob in the cache after the check
	Damaged  int64 // chunks that did not match their sum, dropped
	Verified bool  // complete, and its sha256 matched the digest now
	Err      error // the complete blob did not match its digest (dropped), or an I/O error
}

// VerifyCache checks every blob of the cache in dir: each present chunk
// against the sum recorded when it was fetched (a damaged chunk is dropped,
// to be fetched again when needed), and each complete blob against its
// sha256 digest (dropped whole on a mismatch). each is called per blob.
// A daemon using the cache meanwhile checks chunks on its own on first use
// after open; a chunk it already checked is not dropped from its view.
func VerifyCache(dir string, each func(CacheCheck)) error {
	c, err := cacheDirFor(dir, 1<<62) // scrubbing evicts nothing
	if err != nil {
		return err
	}
	ents, err := os.ReadDir(filepath.Join(c.dir, "blobs", "sha256"))
	if err != nil {
		return fmt.Errorf("cache %s: %w", dir, err)
	}
	for _, e := range ents {
		hexd := e.Name()
		_, want, err := splitDigest("sha256:" + hexd)
		if err != nil || !e.Type().IsRegular() {
			continue // maps, temporaries
		}
		m, err := readMap(c.dataPath(hexd) + ".map")
		if err != nil {
			continue // nothing is trusted without a map: nothing to check
		}
		res := CacheCheck{Digest: "sha256:" + hexd, Size: m.size}
		cf, err := c.openFile(hexd, want, m.size, m.chunk)
		if err != nil {
			res.Err = err
			each(res)
			continue
		}
		if _, err := cf.checkChunks(0, cf.n-1); err != nil {
			res.Err = err
		}
		res.Damaged = cf.damaged.Load()
		cf.mu.Lock()
		complete := cf.have == cf.n
		cf.mu.Unlock()
		if complete && res.Err == nil {
			res.Err = cf.rehash()
			cf.mu.Lock()
			res.Verified = cf.verified
			cf.mu.Unlock()
		}
		res.Present = cf.presentBytes()
		if err := cf.close(); err != nil && res.Err == nil {
			res.Err = err
		}
		each(res)
	}
	return nil
}
