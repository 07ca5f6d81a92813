package repocheck

import (
	"regexp"
	"slices"
	"strings"
)

// ShellCommands returns the names of the programs a bash script runs: the
// first word of every simple command, also inside $(...), `...` and
// double quotes, after prefix assignments, `exec`, `command`, `xargs` and
// `time`. Words that are builtins or keywords, that hold a variable or a
// slash (the repository's own scripts, a built binary), heredoc bodies and
// comments are left out. A heuristic for the repository's own scripts, not
// a full shell parser: it errs towards reporting a word.
func ShellCommands(src string) []string {
	s := &shellScan{src: src}
	s.list(0, false)
	funcs := map[string]bool{}
	for _, m := range funcDef.FindAllStringSubmatch(src, -1) {
		funcs[m[1]] = true
	}
	return slices.DeleteFunc(s.cmds, func(c string) bool { return funcs[c] })
}

// funcDef matches a shell function definition; calls to the script's own
// functions are not programs.
var funcDef = regexp.MustCompile(`(?m)^\s*(?:function\s+)?([A-Za-z_][A-Za-z0-9_-]*)\s*\(\)`)

type shellScan struct {
	src      string
	i        int
	cmds     []string
	heredocs []heredoc // pending: their bodies start at the next newline
}

type heredoc struct {
	delim string
	tabs  bool // <<-: leading tabs are stripped
}

var assignment = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\[[^]]*\])?\+?=`)

// Words after which the next word is again a command name.
var shellKeywords = map[string]bool{
	"if": true, "then": true, "else": true, "elif": true, "fi": true, "do": true, "done": true,
	"while": true, "until": true, "!": true, "{": true, "}": true, "time": true, "exec": true,
	"function": true,
}

// Programs that run the next word as a program, after their options.
var shellRunners = map[string]bool{"exec": true, "time": true, "xargs": true, "nohup": true, "env": true}

// Builtins of bash (and `[`), never programs.
var shellBuiltins = map[string]bool{
	"echo": true, "printf": true, "cd": true, "set": true, "exit": true, "return": true,
	"local": true, "export": true, "read": true, "trap": true, "wait": true, "shift": true,
	"test": true, "[": true, "[[": true, ":": true, "true": true, "false": true, "eval": true,
	"source": true, ".": true, "declare": true, "unset": true, "readonly": true, "type": true,
	"hash": true, "kill": true, "pwd": true, "break": true, "continue": true, "let": true,
	"getopts": true, "mapfile": true, "ulimit": true, "umask": true, "builtin": true,
	"case": true, "esac": true, "for": true, "in": true, "select": true, "command": true,
}

// list scans commands until end (a closing byte at nesting depth 0: ')'
// or '`'), or the end of the source.
func (s *shellScan) list(end byte, inBacktick bool) {
	atCmd := true
	skipWord := false // the word after a redirection is a file name
	forLoop := false  // between `for` and `do`: no command names
	inTest := false   // between [[ and ]]: operands and operators
	runner := false   // after exec, xargs...: options, then a program
	for s.i < len(s.src) {
		c := s.src[s.i]
		switch {
		case end != 0 && c == end:
			s.i++
			return
		case c == ' ' || c == '\t':
			s.i++
		case c == '\\' && s.i+1 < len(s.src) && s.src[s.i+1] == '\n':
			s.i += 2
		case c == '\n':
			s.i++
			s.bodies()
			atCmd, skipWord = true, false
		case c == '#':
			for s.i < len(s.src) && s.src[s.i] != '\n' {
				s.i++
			}
		case c == ';' || c == '&' || c == '|' || c == '(':
			s.i++
			if !inTest {
				atCmd, skipWord = true, false
			}
		case c == ')':
			s.i++
			atCmd = false
		case c == '<' || c == '>':
			s.redirection()
			skipWord = true
		default:
			w := s.word(inBacktick)
			switch {
			case inTest:
				inTest = w != "]]"
			case skipWord:
				skipWord = false
			case forLoop:
				forLoop = w != "do"
			case !atCmd:
			case w == "for" || w == "select":
				forLoop, atCmd = true, false
			case w == "case":
				// Arms are not parsed: the scripts have none; say so if
				// one appears rather than guess.
				s.cmds = append(s.cmds, "case-statement-not-scanned")
				s.skipTo("esac")
			case w == "[[":
				inTest, atCmd = true, false
			case runner && strings.HasPrefix(w, "-"):
				// an option of exec, xargs...
			case assignment.MatchString(w), shellKeywords[w]:
				// still at a command name
			default:
				atCmd, runner = shellRunners[w], shellRunners[w]
				if !shellBuiltins[w] && !shellKeywords[w] && w != "" && !strings.ContainsAny(w, "$/`") {
					s.cmds = append(s.cmds, w)
				}
			}
		}
	}
}

// word reads one word and scans the commands substituted in it. It
// returns the word's text with quotes removed.
func (s *shellScan) word(inBacktick bool) string {
	var b strings.Builder
	for s.i < len(s.src) {
		c := s.src[s.i]
		switch {
		case strings.IndexByte(" \t\n;&|()<>", c) >= 0:
			return b.String()
		case c == '`' && inBacktick:
			return b.String()
		case s.escapeOrSubstitution(&b):
		case c == '\'':
			j := strings.IndexByte(s.src[s.i+1:], '\'')
			if j < 0 {
				j = len(s.src) - s.i - 1
			}
			b.WriteString(s.src[s.i+1 : s.i+1+j])
			s.i += j + 2
		case c == '"':
			s.i++
			s.double(&b)
		default:
			b.WriteByte(c)
			s.i++
		}
	}
	return b.String()
}

// double reads the rest of a double-quoted string.
func (s *shellScan) double(b *strings.Builder) {
	for s.i < len(s.src) {
		c := s.src[s.i]
		switch {
		case c == '"':
			s.i++
			return
		case s.escapeOrSubstitution(b):
		default:
			b.WriteByte(c)
			s.i++
		}
	}
}

// escapeOrSubstitution reads a backslash escape or a substitution at s.i,
// if there is one there, and says so. A substitution stands as "$" in the
// word, which then holds a variable.
func (s *shellScan) escapeOrSubstitution(b *strings.Builder) bool {
	switch c := s.src[s.i]; {
	case c == '\\' && s.i+1 < len(s.src):
		b.WriteByte(s.src[s.i+1])
		s.i += 2
	case c == '$' || c == '`':
		b.WriteByte('$')
		s.substitution()
	default:
		return false
	}
	return true
}

// substitution reads $name, ${...}, $((...)), $(...) or `...` at s.i,
// scanning the commands of the last two.
func (s *shellScan) substitution() {
	switch {
	case strings.HasPrefix(s.src[s.i:], "$(("):
		s.i += 3
		s.skipTo("))")
	case strings.HasPrefix(s.src[s.i:], "$("):
		s.i += 2
		s.list(')', false)
	case strings.HasPrefix(s.src[s.i:], "${"):
		s.i += 2
		s.skipTo("}")
	case s.src[s.i] == '`':
		s.i++
		s.list('`', true)
	default:
		s.i++ // $name, $1, $?: the word holds a variable
	}
}

// redirection reads <, >, >>, <&, 2>&1's operator part, and heredoc
// operators with their delimiter.
func (s *shellScan) redirection() {
	if strings.HasPrefix(s.src[s.i:], "<<<") {
		s.i += 3
		return
	}
	if strings.HasPrefix(s.src[s.i:], "<<") {
		s.i += 2
		h := heredoc{}
		if s.i < len(s.src) && s.src[s.i] == '-' {
			h.tabs = true
			s.i++
		}
		for s.i < len(s.src) && (s.src[s.i] == ' ' || s.src[s.i] == '\t') {
			s.i++
		}
		h.delim = s.word(false)
		s.heredocs = append(s.heredocs, h)
		return
	}
	for s.i < len(s.src) && strings.IndexByte("<>&", s.src[s.i]) >= 0 {
		s.i++
	}
}

// bodies skips the bodies of the heredocs opened on the line just ended.
func (s *shellScan) bodies() {
	for _, h := range s.heredocs {
		for s.i < len(s.src) {
			end := strings.IndexByte(s.src[s.i:], '\n')
			if end < 0 {
				end = len(s.src) - s.i
			}
			line := s.src[s.i : s.i+end]
			s.i += end + 1
			if h.tabs {
				line = strings.TrimLeft(line, "\t")
			}
			if line == h.delim {
				break
			}
		}
	}
	s.heredocs = s.heredocs[:0]
	s.i = min(s.i, len(s.src))
}

func (s *shellScan) skipTo(marker string) {
	j := strings.Index(s.src[s.i:], marker)
	if j < 0 {
		s.i = len(s.src)
		return
	}
	s.i += j + len(marker)
}
