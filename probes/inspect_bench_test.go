package probes

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// BenchmarkInspect is the cost of discovery's inspection (attach-first: no
// DWARF) of binaries of different sizes and link modes; the point is that
// it does not grow with the binary.
func BenchmarkInspect(b *testing.B) {
	bins := map[string]string{"victim-2MB": buildVictim(b, "go1.26", false)}
	if d, err := exec.LookPath("docker"); err == nil {
		bins["docker-43MB-external"] = d
		s := filepath.Join(b.TempDir(), "docker-stripped")
		if out, err := exec.Command("objcopy", "--strip-all", d, s).CombinedOutput(); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
		bins["docker-29MB-external-stripped"] = s
	}
	if p := os.Getenv("MAPSENTRY_BENCH_BINARY"); p != "" {
		bins["extra"] = p
	}
	for name, path := range bins {
		b.Run(name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				bin, err := inspect(path, false)
				if err != nil {
					b.Fatal(err)
				}
				bin.Close()
			}
		})
	}
}
