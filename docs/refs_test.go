// Package docs holds the format descriptions; this test keeps the
// references to them from code, tests and other docs pointing at sections
// that exist, and keeps paths outside the repository out of it.
package docs

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	heading = regexp.MustCompile(`^#+ (\d+(?:\.\d+)*)\.? `)
	// "docs/format-lsmt.md §3.2", "docs/ublk-protocol.md §1.3, §3.1",
	// and inside docs: "[format-lsmt.md](format-lsmt.md) §5.2".
	docRef  = regexp.MustCompile(`(?:docs/|\]\()([a-z-]+\.md)\)?((?:(?:\s*,\s*|\s+and\s+|\s*)§\s*\d+(?:\.\d+)*)*)`)
	section = regexp.MustCompile(`§\s*(\d+(?:\.\d+)*)`)
	// Places outside the repository that once held fixtures and notes.
	outside = []string{".." + "/shared", "shared" + "/spec", "/" + "work/"}
)

func TestReferences(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root: %v", err)
	}
	sections := map[string]map[string]bool{}
	mds, _ := filepath.Glob("*.md")
	for _, md := range mds {
		b, err := os.ReadFile(md)
		if err != nil {
			t.Fatal(err)
		}
		s := map[string]bool{}
		for _, l := range strings.Split(string(b), "\n") {
			if m := heading.FindStringSubmatch(l); m != nil {
				s[m[1]] = true
			}
		}
		sections[md] = s
	}
	refs := 0
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			if rel == ".git" || rel == "testdata" || rel == "bin" {
				return filepath.SkipDir
			}
			return nil
		}
		switch filepath.Ext(p) {
		case ".go", ".md", ".sh":
		default:
			if d.Name() != "Makefile" {
				return nil
			}
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for i, l := range strings.Split(string(b), "\n") {
			for _, o := range outside {
				if strings.Contains(l, o) {
					t.Errorf("%s:%d names %q, outside the repository", rel, i+1, o)
				}
			}
			for _, m := range docRef.FindAllStringSubmatch(l, -1) {
				s, ok := sections[m[1]]
				if !ok {
					if strings.Contains(l, "docs/"+m[1]) || filepath.Dir(rel) == "docs" {
						t.Errorf("%s:%d: docs/%s does not exist", rel, i+1, m[1])
					}
					continue
				}
				for _, sec := range section.FindAllStringSubmatch(m[2], -1) {
					refs++
					if !s[sec[1]] {
						t.Errorf("%s:%d: %s has no section %s", rel, i+1, m[1], sec[1])
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if refs < 100 {
		t.Errorf("found only %d section references; is the pattern still right?", refs)
	}
}
