package file

// TempPrefix exposes the name prefix of files being created, for tests that simulate a crash.
const TempPrefix = tempPrefix

// BytesCopied returns the bytes that d's snapshots, clones and reverts have copied; reflinks
// copy none.
func BytesCopied(d *Driver) int64 { return d.copied.Load() }
