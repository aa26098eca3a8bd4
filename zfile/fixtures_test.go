package zfile

import (
	"os"
	"path/filepath"
	"testing"
)

// fixtureDir is the shared fixture tree (spec §5, fixtures/oracle/README.txt).
// OBDFS_FIXTURES overrides the default location.
func fixtureDir(t testing.TB) string {
	d := os.Getenv("OBDFS_FIXTURES")
	if d == "" {
		d = "/work/shared/fixtures"
	}
	if _, err := os.Stat(filepath.Join(d, "oracle", "README.txt")); err != nil {
		t.Skipf("fixtures not found at %s (set OBDFS_FIXTURES): %v", d, err)
	}
	return d
}

func readFixture(t testing.TB, rel string) []byte {
	b, err := os.ReadFile(filepath.Join(fixtureDir(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
