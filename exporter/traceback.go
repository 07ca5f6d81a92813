package exporter

import (
	"fmt"
	"strings"
)

// traceback renders g the way the Go runtime prints a goroutine in a crash
// (runtime/traceback.go, stable since Go 1.0 apart from "in goroutine N" on
// the created-by line, added in Go 1.21), so exception.stacktrace reads like
// the program's own stderr. Arguments and PC offsets are not known here and
// are left out.
func traceback(g goroutineView) string {
	var b strings.Builder
	status := g.Status
	if status == "" {
		status = "unknown"
	}
	if g.WaitReason != "" {
		status += ", " + g.WaitReason
	}
	fmt.Fprintf(&b, "goroutine %d [%s]:\n", g.ID, status)
	for _, f := range g.Frames {
		writeFrame(&b, f.Function+"(...)", f)
	}
	if g.CreatedBy != nil {
		head := "created by " + g.CreatedBy.Function
		if g.CreatorID != 0 {
			head += fmt.Sprintf(" in goroutine %d", g.CreatorID)
		}
		writeFrame(&b, head, *g.CreatedBy)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func writeFrame(b *strings.Builder, head string, f frameView) {
	b.WriteString(head)
	b.WriteByte('\n')
	if f.File != "" {
		fmt.Fprintf(b, "\t%s:%d\n", f.File, f.Line)
	}
}
