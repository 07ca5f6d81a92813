package repocheck

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// Deps is what scripts/deps.sh provides: programs installed with apt,
// files (headers, a toolchain at a fixed path) and programs it builds.
type Deps struct {
	Programs map[string]string // program -> Debian package
	Paths    map[string]string // absolute path -> Debian package
	Built    map[string]string // program -> build script
}

// deps.sh's table lines, and the older form other branches may still add:
//
//	tool PROGRAM PACKAGE
//	path PATH PACKAGE
//	build NAME SCRIPT
//	command -v PROGRAM >/dev/null || need+=(PACKAGE)
var (
	depsLine    = regexp.MustCompile(`(?m)^\s*(tool|path|build)\s+(\S+)\s+(\S+)\s*(?:#.*)?$`)
	depsCommand = regexp.MustCompile(`(?m)^\s*command -v (\S+)\s.*need\+=\(([^)]*)\)`)
	depsFile    = regexp.MustCompile(`(?m)^\s*\[\[ -[efx] (/\S+) \]\]\s*\|\|\s*need\+=\(([^)]*)\)`)
)

// ReadDeps reads the table of scripts/deps.sh under root.
func ReadDeps(root string) (Deps, error) {
	b, err := os.ReadFile(filepath.Join(root, "scripts", "deps.sh"))
	if err != nil {
		return Deps{}, err
	}
	d := Deps{Programs: map[string]string{}, Paths: map[string]string{}, Built: map[string]string{}}
	for _, m := range depsLine.FindAllStringSubmatch(string(b), -1) {
		switch m[1] {
		case "tool":
			d.Programs[m[2]] = m[3]
		case "path":
			d.Paths[m[2]] = m[3]
		case "build":
			d.Built[m[2]] = m[3]
		}
	}
	for _, m := range depsCommand.FindAllStringSubmatch(string(b), -1) {
		d.Programs[m[1]] = strings.TrimSpace(m[2])
	}
	for _, m := range depsFile.FindAllStringSubmatch(string(b), -1) {
		d.Paths[m[1]] = strings.TrimSpace(m[2])
	}
	if len(d.Programs) == 0 {
		return d, fmt.Errorf("scripts/deps.sh: no `tool PROGRAM PACKAGE` line")
	}
	return d, nil
}

// Provides says whether deps.sh, the machine (Prerequisites) or Debian's
// essential set provides the program name (a bare name or an absolute
// path).
func (d Deps) Provides(name string) bool {
	if filepath.IsAbs(name) {
		if _, ok := d.Paths[name]; ok {
			return true
		}
		name = filepath.Base(name)
	}
	_, apt := d.Programs[name]
	_, built := d.Built[name]
	return apt || built || slices.Contains(Prerequisites, name) || slices.Contains(Essential, name)
}

// Prerequisites come with a machine of this project's kind (Go at
// /usr/local/go, gcc with binutils, make, git, the docker client; see the
// workplace's description of the `go` machine kind): the README's two
// commands need the first ones before deps.sh can run.
var Prerequisites = []string{"go", "gofmt", "make", "git", "gcc", "objcopy", "docker"}

// Essential are programs of Debian's essential and required packages
// (bash, coreutils, dash, debianutils, diffutils, findutils, grep, gzip,
// hostname, sed, tar, util-linux, mawk, login, ncurses-bin) and of apt
// itself: present on every Debian system, deps.sh among their users.
var Essential = []string{
	"bash", "sh", "dash", "env", "cat", "cp", "mv", "rm", "ln", "ls", "mkdir", "mktemp", "rmdir", "chmod",
	"chown", "touch", "install", "basename", "dirname", "realpath", "readlink", "cut", "head", "tail", "tr",
	"sort", "uniq", "wc", "seq", "sleep", "date", "id", "tee", "sha256sum", "cmp", "diff", "find", "xargs",
	"grep", "sed", "tar", "gzip", "true", "false", "yes", "stat", "nproc", "uname", "hostname", "timeout",
	"kill", "mount", "umount", "awk", "mawk", "which", "apt-get", "dpkg", "sync", "df", "du", "printenv",
	"whoami", "nice", "nohup", "expr", "test", "tput", "run-parts", "unshare", "nsenter", "setpriv",
}
