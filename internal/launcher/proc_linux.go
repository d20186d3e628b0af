package launcher

import "syscall"

// procAttr puts a worker in its own process group, so that a Ctrl-C at the
// terminal reaches it only through launch (once), and ties it to launch:
// if launch is killed, the kernel kills the worker too.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
