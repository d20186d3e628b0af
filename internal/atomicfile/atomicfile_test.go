package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesOrKeeps(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	sum, err := Write(p, func(w io.Writer) error { _, err := io.WriteString(w, "hello"); return err })
	if err != nil {
		t.Fatal(err)
	}
	// SHA-256 of "hello".
	if sum != "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" {
		t.Fatalf("sum %s", sum)
	}
	if got, _ := Sum(p); got != sum {
		t.Fatalf("Sum %s, Write said %s", got, sum)
	}
	_, err = Write(p, func(w io.Writer) error {
		io.WriteString(w, "half a new file")
		return errors.New("disk on fire")
	})
	if err == nil {
		t.Fatal("a failed fill reported success")
	}
	b, _ := os.ReadFile(p)
	if string(b) != "hello" {
		t.Fatalf("the old file was damaged: %q", b)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
}
