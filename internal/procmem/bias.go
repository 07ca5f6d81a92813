package procmem

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
)

// atEntry is the auxv tag of the program's entry point.
const atEntry = 9

// LoadBias returns where process pid loaded its executable minus the
// executable's link-time entry point: AT_ENTRY from /proc/PID/auxv minus
// linkEntry. It is what runtime addresses of a PIE binary are shifted by
// (0 for ET_EXEC binaries, Go's default on linux/amd64).
func LoadBias(pid int, linkEntry uint64) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/auxv")
	if err != nil {
		return 0, fmt.Errorf("read auxv of pid %d: %w", pid, err)
	}
	for i := 0; i+16 <= len(b) && i < 64<<10; i += 16 {
		if binary.LittleEndian.Uint64(b[i:]) == atEntry {
			entry := binary.LittleEndian.Uint64(b[i+8:])
			if entry < linkEntry {
				return 0, fmt.Errorf("auxv of pid %d: entry %#x below the link-time entry %#x", pid, entry, linkEntry)
			}
			return entry - linkEntry, nil
		}
	}
	return 0, fmt.Errorf("auxv of pid %d has no AT_ENTRY", pid)
}
