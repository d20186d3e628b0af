//go:build cuda

package cuda

// #cgo LDFLAGS: -ldl
// #include <stdlib.h>
// #include "dl.h"
import "C"

import (
	"fmt"
	"os"
	"strings"
	"unsafe"
)

// library is a shared library opened at run time.
type library struct {
	name   string
	handle unsafe.Pointer
}

// openLibrary opens the first of names that loads, or the path in the
// environment variable env when it is set; the error lists what was tried.
func openLibrary(env string, names ...string) (*library, error) {
	if p := os.Getenv(env); p != "" {
		names = []string{p}
	}
	var tried []string
	for _, n := range names {
		cn := C.CString(n)
		h := C.dlopen(cn, C.RTLD_NOW|C.RTLD_GLOBAL)
		C.free(unsafe.Pointer(cn))
		if h != nil {
			return &library{name: n, handle: h}, nil
		}
		tried = append(tried, C.GoString(C.dlerror()))
	}
	return nil, fmt.Errorf("cannot load %s (set %s to its path, or add its folder to LD_LIBRARY_PATH): %s",
		strings.Join(names, " or "), env, strings.Join(tried, "; "))
}

// symbol looks up a function of the library.
func (l *library) symbol(name string) (unsafe.Pointer, error) {
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	p := C.dlsym(l.handle, cn)
	if p == nil {
		return nil, fmt.Errorf("%s has no %s", l.name, name)
	}
	return p, nil
}

// symbols looks up each name into the pointer beside it.
func (l *library) symbols(ptrs map[string]*unsafe.Pointer) error {
	for name, dst := range ptrs {
		p, err := l.symbol(name)
		if err != nil {
			return err
		}
		*dst = p
	}
	return nil
}
