package shard

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Problem is a shard of a finished output that cannot be used, and why.
type Problem struct {
	Shard  int
	File   string
	Reason string
}

func (p Problem) String() string { return fmt.Sprintf("%s: %s", p.File, p.Reason) }

// Check reads dir's index and checks every shard it lists: present, a
// regular file inside dir, of the size the index says and, when sums is
// set, of its SHA-256. It writes nothing. An index that cannot be read or
// is unsound is an error; damaged shards are Problems.
func Check(dir string, sums bool) (*Index, []Problem, error) {
	x, err := readIndex(filepath.Join(dir, IndexFile))
	if errors.Is(err, os.ErrNotExist) {
		if _, perr := os.Stat(filepath.Join(dir, PartialFile)); perr == nil {
			return nil, nil, fmt.Errorf("%s: prep did not finish (only %s is there): rerun prep with the same --out to complete it", dir, PartialFile)
		}
		return nil, nil, fmt.Errorf("%s: no %s: run prep to make it", dir, IndexFile)
	}
	if err != nil {
		return nil, nil, err
	}
	return x, checkShards(dir, x, sums), nil
}

func checkShards(dir string, x *Index, sums bool) []Problem {
	var out []Problem
	for i, s := range x.Shards {
		if reason := checkShard(dir, s, sums); reason != "" {
			out = append(out, Problem{Shard: i, File: s.File, Reason: reason})
		}
	}
	return out
}

// checkShard says what is wrong with shard s, or "".
func checkShard(dir string, s Info, sums bool) string {
	f, err := openShardFile(dir, s)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if !sums {
		return ""
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err.Error()
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != s.SHA256 {
		return fmt.Sprintf("SHA-256 %s, the index says %s", got, s.SHA256)
	}
	return ""
}

// openShardFile opens shard s of dir for reading after checking that it is
// a regular file inside dir (a symlink may lead elsewhere inside it, never
// out of it) of the size the index says. Its errors are reasons: missing,
// refused, or the size.
func openShardFile(dir string, s Info) (*os.File, error) {
	if err := plainName(s.File); err != nil {
		return nil, fmt.Errorf("refused: %v", err)
	}
	path := filepath.Join(dir, s.File)
	if err := insideDir(dir, path); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, errors.New("missing")
	}
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("refused: not a regular file (%s)", st.Mode().Type())
	}
	if err == nil && st.Size() != s.Bytes {
		err = fmt.Errorf("size %d bytes, the index says %d", st.Size(), s.Bytes)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// insideDir refuses a path that is a symlink resolving outside dir.
func insideDir(dir, path string) error {
	st, err := os.Lstat(path)
	if err != nil || st.Mode()&os.ModeSymlink == 0 {
		return nil // absent or not a link: os.Open says which
	}
	target, err := filepath.EvalSymlinks(path)
	if err != nil {
		return fmt.Errorf("refused: a link that does not resolve (%v)", err)
	}
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(root, target)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) || filepath.IsAbs(rel) {
		return fmt.Errorf("refused: a link to %s, outside the folder", target)
	}
	return nil
}
