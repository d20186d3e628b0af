package data

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// errOutside marks an item path that leads out of its data set's folder.
var errOutside = errors.New(ReasonOutsideFolder)

// folder is a data set's folder, the only place its listings may name files
// in. Hugging Face datasets joins a listed name to the folder
// (datasets/packaged_modules/folder_based_builder) and reads whatever that
// names; here a name that leads elsewhere is refused instead, so a data set
// cannot make a run read (or report on) files outside it.
type folder struct {
	dir  string // absolute, as given
	real string // dir with its symlinks resolved
}

func newFolder(dir string) folder {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		real = dir
	}
	return folder{dir: dir, real: real}
}

// path is where a listed name points: an absolute name as it is, a
// relative one (slash-separated) joined to base, a folder inside f.
func (f folder) path(base, name string) string {
	p := filepath.FromSlash(name)
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(base, p)
}

// resolve returns the file at path p (from f.path) with its symlinks
// resolved. A path that leads out of the folder, by ".." or an absolute name
// elsewhere (checked before anything is touched) or by a symlink on the way,
// gives an error wrapping errOutside; a missing file (a dangling symlink
// too) gives an error wrapping fs.ErrNotExist.
func (f folder) resolve(p string) (string, error) {
	if !within(f.dir, p) && !within(f.real, p) {
		return "", errOutside
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", err
	}
	if !within(f.real, real) {
		return "", errOutside
	}
	return real, nil
}

// within reports whether p lies in dir (both clean and absolute).
func within(dir, p string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && filepath.IsLocal(rel)
}

// readFile reads the item file at path p (from f.path), or says why the
// item is skipped: outside the folder, missing, or unreadable (with the
// error).
func (f folder) readFile(p string) (b []byte, reason, detail string) {
	real, err := f.resolve(p)
	if err == nil {
		b, err = os.ReadFile(real)
	}
	switch {
	case err == nil:
		return b, "", ""
	case errors.Is(err, errOutside):
		return nil, ReasonOutsideFolder, fmt.Sprintf("%s is not inside %s", p, f.dir)
	case errors.Is(err, fs.ErrNotExist):
		return nil, ReasonMissingFile, ""
	}
	return nil, ReasonUnreadableImage, err.Error()
}
