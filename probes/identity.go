package probes

import (
	"os"
	"syscall"
)

// FileKey identifies a binary file the way uprobes do: by inode.
type FileKey struct {
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
}

// FileGen is the generation of a file's contents: a write changes mtime
// and ctime (and usually the size). An inode keeps its number when a file
// is rewritten in place (`cp new old`), so probes are kept per (FileKey,
// FileGen), and a changed generation means the old probes must go before
// the new contents run.
type FileGen struct {
	MtimeNS int64 `json:"mtime_ns"`
	CtimeNS int64 `json:"ctime_ns"`
	Size    int64 `json:"size"`
}

// fileIdentity returns the key and generation of a stat result.
func fileIdentity(st os.FileInfo) (FileKey, FileGen, bool) {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return FileKey{}, FileGen{}, false
	}
	return FileKey{uint64(sys.Dev), sys.Ino}, statGen(sys), true
}

func statGen(sys *syscall.Stat_t) FileGen {
	return FileGen{MtimeNS: sys.Mtim.Nano(), CtimeNS: sys.Ctim.Nano(), Size: sys.Size}
}
