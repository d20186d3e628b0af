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

// TestWriteMode: the file gets os.Create's mode (0666 less the umask), not
// CreateTemp's 0600.
func TestWriteMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if _, err := Write(path, func(w io.Writer) error { _, err := w.Write([]byte("x")); return err }); err != nil {
		t.Fatal(err)
	}
	ref := filepath.Join(t.TempDir(), "ref")
	g, err := os.Create(ref)
	if err != nil {
		t.Fatal(err)
	}
	g.Close()
	got, err1 := os.Stat(path)
	want, err2 := os.Stat(ref)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if got.Mode().Perm() != want.Mode().Perm() {
		t.Errorf("mode %v, want %v as os.Create makes", got.Mode().Perm(), want.Mode().Perm())
	}
}

// TestWriteReplacesPlantedLink: a symbolic link planted at the target is
// replaced by the new file, its own target left alone; the temporary file is
// created exclusively under a random name, so no link planted beside it is
// followed either.
func TestWriteReplacesPlantedLink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "f")
	for _, link := range []string{p, p + ".tmp", filepath.Join(dir, ".f.tmp")} {
		if err := os.Symlink(victim, link); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Write(p, func(w io.Writer) error { _, err := io.WriteString(w, "new"); return err }); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Fatalf("the link's target was overwritten: %q", b)
	}
	st, err := os.Lstat(p)
	if err != nil || !st.Mode().IsRegular() {
		t.Fatalf("%s is not a regular file: %v", p, err)
	}
	if b, _ := os.ReadFile(p); string(b) != "new" {
		t.Fatalf("%s holds %q", p, b)
	}
}

// TestCreateCommitAbort: a File written over many calls leaves path as it
// was until Commit, which returns the bytes' SHA-256; Abort leaves neither
// path changed nor a temporary file.
func TestCreateCommitAbort(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "shard")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Create(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"hel", "lo"} {
		if _, err := io.WriteString(f, s); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := os.ReadFile(p); string(b) != "old" || f.Size() != 5 {
		t.Fatalf("before Commit: path holds %q, Size %d; want old and 5", b, f.Size())
	}
	sum, err := f.Commit()
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "hello" || sum != "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" {
		t.Fatalf("after Commit: path holds %q, sum %s", b, sum)
	}

	f, err = Create(p)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(f, "torn")
	if err := f.Abort(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "hello" {
		t.Fatalf("after Abort: path holds %q", b)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
}
