//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package safetensors

import (
	"fmt"
	"io"
	"os"
)

// mapFile reads the whole file into memory on systems without syscall.Mmap.
func mapFile(f *os.File, size int64) (data []byte, unmap func() error, err error) {
	if size != int64(int(size)) {
		return nil, nil, fmt.Errorf("file of %d bytes does not fit in the address space", size)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, nil, fmt.Errorf("read: %w", err)
	}
	return b, func() error { return nil }, nil
}

// createMode is the mode os.Create asks for; the system applies its own defaults.
const createMode os.FileMode = 0o666

// syncDir does nothing here: folders cannot be fsynced portably outside unix
// (Windows refuses FlushFileBuffers on a folder handle).
func syncDir(dir string) error { return nil }
