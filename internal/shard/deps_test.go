package shard

import (
	"os/exec"
	"strings"
	"testing"
)

// TestContractKeepsToolsApart: with the data contract in this package,
// train links no reader or decoder of input data (parquet, JPEG, WebP, ...;
// PNG is how it writes validation images), and prep does not import the
// training engine. Before, train reached them through internal/prepare and
// prep imported internal/train for the field names.
func TestContractKeepsToolsApart(t *testing.T) {
	const mod = "github.com/zerodiff/zerodiff/"
	for _, tc := range []struct {
		tool      string
		forbidden []string // import path prefixes
	}{
		{"train", []string{"github.com/parquet-go/", "golang.org/x/image/webp", "golang.org/x/image/bmp", "golang.org/x/image/tiff",
			"image/jpeg", "image/gif", mod + "internal/data", mod + "internal/prepare"}},
		{"prep", []string{mod + "internal/train"}},
	} {
		deps := goListDeps(t, mod+tc.tool)
		if bad := linked(deps, tc.forbidden); len(bad) > 0 {
			t.Errorf("%s links %s", tc.tool, strings.Join(bad, ", "))
		}
	}
}

// goListDeps is `go list -deps pkg`, one import path a line; without the go
// command the test is skipped.
func goListDeps(t *testing.T, pkg string) []string {
	t.Helper()
	gocmd, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list dependencies with")
	}
	out, err := exec.Command(gocmd, "list", "-deps", pkg).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

// linked returns the deps that start with one of the forbidden prefixes.
func linked(deps, forbidden []string) []string {
	var bad []string
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, strings.TrimSuffix(f, "/")+"/") {
				bad = append(bad, d)
				break
			}
		}
	}
	return bad
}
