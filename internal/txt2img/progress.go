package txt2img

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// progress reports sampling steps: a redrawn bar on a terminal, a plain line
// per finished image otherwise (logs of batch jobs stay readable).
type progress struct {
	images, steps int
	tty           bool
	start         time.Time
}

func newProgress(images, steps int) *progress {
	st, err := os.Stderr.Stat()
	return &progress{images: images, steps: steps, tty: err == nil && st.Mode()&os.ModeCharDevice != 0, start: time.Now()}
}

// step reports that image (0-based) finished sampler step s.
func (p *progress) step(image, s int) {
	if !p.tty || p.steps == 0 {
		return
	}
	const width = 30
	fill := width * s / p.steps
	fmt.Fprintf(os.Stderr, "\rimage %d/%d [%s%s] step %d/%d  %.1fs", image+1, p.images,
		strings.Repeat("=", fill), strings.Repeat(" ", width-fill), s, p.steps, time.Since(p.start).Seconds())
}

// done reports a written file.
func (p *progress) done(path string) {
	if p.tty {
		fmt.Fprint(os.Stderr, "\r\033[K")
	}
	fmt.Fprintf(os.Stderr, "wrote %s (%.1fs)\n", path, time.Since(p.start).Seconds())
}
