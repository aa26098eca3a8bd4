// Package remote reads overlaybd images lazily from OCI registries and OCI
// image layouts.
//
// Resolve turns docker://HOST/REPO[:TAG|@DIGEST] or oci:DIR[:TAG] into the
// image's overlaybd layer blobs, bottom first; OpenBlob opens one blob named
// by an overlaybd config (repoBlobUrl + digest + size). A *Blob is an
// io.ReaderAt over the whole blob: misses are fetched with HTTP Range GETs
// through go-containerregistry's authenticating transport, widened to
// Options.RefillSize-aligned chunks (overlaybd's refillSize, 256 KiB by
// default; docs/image-config.md §5), and kept in a persistent cache
// under Options.CacheDir.
//
// # Reading on a real network
//
// Range GETs come in three classes with separate in-flight budgets per
// repository (fetch.go): readers' misses (Options.MaxInflight), readahead
// and trace replay (as many), background download (2). A class takes its
// slot before claiming chunks, so a reader never waits behind a GET that is
// still queued; it may wait for one in flight for the same chunk.
// Readahead (readahead.go) follows a few sequential streams per blob and
// keeps about two round trips of the reader's pace fetched ahead, up to
// Options.Readahead. Resolve warms the blob client (auth handshake, idle
// connections) while the manifest is fetched, and image fetches each
// layer's first chunk and last MiB at once before opening it. The
// background download (background.go) and start-up traces (trace.go) are
// described in their files.
//
// # Cache layout and crash safety
//
// The cache is content addressed and shared by every repository:
//
//	CacheDir/blobs/sha256/<hex>       sparse file, the blob's bytes at their offsets
//	CacheDir/blobs/sha256/<hex>.map   which chunks of it are present, and their sums (see cache.go)
//	CacheDir/refs/<hash of spec>.json  the last resolution of a docker:// spec, used
//	                                   when the registry cannot be reached
//
// A chunk counts as present only if the .map says so. The .map is replaced
// atomically (write to a temporary file, fsync, rename) and only after the data
// file has been fdatasync'ed, so after a crash the map never claims bytes that
// did not reach the disk: at worst recently fetched chunks are fetched again.
//
// Whole blobs are evicted, least recently used first, when the cache grows
// past Options.CacheMax; a blob open in any process (it holds a shared flock
// on its data file) is never evicted.
//
// # Integrity
//
// The registry is not trusted to return the right bytes. A blob whose chunks
// are all present is hashed and compared with its digest; on a mismatch the
// whole cached blob is dropped. Partial blobs cannot be checked this way: a
// ZFile layer checks a CRC per block and calls Blob.Invalidate on a mismatch,
// so the range is fetched again once before the read fails. For an
// uncompressed (raw LSMT) layer nothing checks a partial range: wrong bytes
// from the registry reach the reader until the blob is complete. Pull such
// layers (obdfs pull) to have them verified before use.
//
// The cache itself is not trusted either: the .map holds a CRC32C of each
// chunk as it arrived, and each cached chunk is summed again once per open
// before it is first served; a chunk that no longer matches is dropped and
// fetched again. Blob.Fetch (obdfs pull) hashes a complete blob again even
// if it matched once, and VerifyCache (obdfs cache verify) scrubs the cache.
//
// # Failures
//
// Each range GET is retried (Options.Retries, with backoff) on connection
// errors, timeouts (Options.Timeout per attempt), short bodies, 408, 429 and
// 5xx. When the tries are used up, ReadAt returns a *FetchError; front ends
// turn it into EIO. Nothing from a failed attempt is cached.
//
// A 429 or 503 with Retry-After is waited out when the wait fits in
// Options.Timeout (else it fails at once, naming the wait). Blob GETs follow
// redirects to object storage with Go's client, and go-containerregistry's
// transport sends the registry token only to the registry's host; a
// 400/401/403 from a redirect target (an expired pre-signed URL) is retried
// through the registry, which hands out a fresh URL. A 401/403 from the
// registry after the transport's own token refresh, or a token server
// refusing the credentials, redoes the handshake once with credentials
// resolved again from the keychain (rotated passwords, helper tokens).
// A server that ignores Range (200, whole body) is read correctly; the bytes
// passed over on the way to the asked range are cached too.
//
// # Mirrors
//
// Options.HostsDir is read the way containerd reads its certs.d directory
// (hosts.go): HOST/hosts.toml lists mirrors, tried in file order before the
// registry, with their capabilities (pull: blobs and manifests by digest;
// resolve: tags), CA and client certificates, skip_verify, extra headers,
// dial_timeout and override_path; a directory without hosts.toml gives its
// Docker-style *.crt/*.cert/*.key files to the registry itself. A mirror is
// tried once per request (no retries: the next host is the retry). One that
// fails (connection, timeout, 5xx, a wrong Content-Range or blob size) is
// passed over for a cooldown (30 s, doubling per further failure), so a
// dead mirror costs one timeout per cooldown, not one per read; a 404 passes
// it over for that request only. A mirror answering a Range GET with the
// whole blob is a pull-through cache filling it: the node polls it (see
// mirror.go) rather than read the whole answer or pass it by. Manifests go
// through mirrors with go-containerregistry and the same fallback. When
// server names another host than the image's registry, it is tried last
// but one, before the registry. Mirrors other than override_path ones do
// the usual token handshake with their own credentials from the keychain.
package remote
