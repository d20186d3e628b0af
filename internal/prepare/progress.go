package prepare

import (
	"fmt"
	"io"
	"time"
)

// NewBar returns a Progress callback that draws one line (items, records,
// skips, images per second, time left) at most every interval: redrawn in
// place on a terminal (tty), as a new line otherwise, so logs of batch jobs
// stay readable.
func NewBar(w io.Writer, interval time.Duration, tty bool) func(Progress) {
	var last time.Time
	return func(p Progress) {
		now := time.Now()
		if !p.Done && now.Sub(last) < interval {
			return
		}
		last = now
		if !tty {
			fmt.Fprintln(w, barLine(p, 30))
			return
		}
		fmt.Fprint(w, "\r"+barLine(p, 30))
		if p.Done {
			fmt.Fprintln(w)
		}
	}
}

// barLine renders p; width is the length of the bar itself.
func barLine(p Progress, width int) string {
	rate := 0.0
	if s := p.Elapsed.Seconds(); s > 0 {
		rate = float64(p.Records-p.Resumed) / s
	}
	if p.Total <= 0 {
		return fmt.Sprintf("prep %d items, %d records, %d skipped, %.1f img/s", p.Items, p.Records, p.Skipped, rate)
	}
	filled := min(width*p.Items/p.Total, width)
	bar := make([]byte, width)
	for i := range bar {
		bar[i] = ' '
		if i < filled {
			bar[i] = '='
		}
	}
	eta := "--"
	if rate > 0 && p.Items < p.Total {
		// Records per item so far stands in for what the rest will yield.
		left := float64(p.Total-p.Items) * float64(p.Records) / float64(max(p.Items, 1)) / rate
		eta = (time.Duration(left) * time.Second).Round(time.Second).String()
	}
	return fmt.Sprintf("prep [%s] %d/%d items, %d records, %d skipped, %.1f img/s, %s left",
		string(bar), p.Items, p.Total, p.Records, p.Skipped, rate, eta)
}
