//go:build !linux

package launcher

import "syscall"

// procAttr puts a worker in its own process group, so that a Ctrl-C at the
// terminal reaches it only through launch (once).
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
