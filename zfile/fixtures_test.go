package zfile

import (
	"testing"

	"github.com/obdfs/obdfs/internal/fixture"
)

// readFixture reads testdata/REL (testdata/README.md).
func readFixture(t testing.TB, rel string) []byte {
	t.Helper()
	return fixture.Read(t, rel)
}
