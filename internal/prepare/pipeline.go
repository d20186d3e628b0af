package prepare

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/zerodiff/zerodiff/internal/bucket"
	"github.com/zerodiff/zerodiff/internal/data"
	"github.com/zerodiff/zerodiff/internal/shard"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Options configure a prep run.
type Options struct {
	Out       string         // output folder
	Transform data.Transform // resize, crop, flip; its Seed also picks among several captions
	// Buckets, when set, sort images into aspect-ratio buckets (kohya's
	// rules at Transform.Resolution; see package bucket): each image is
	// resized to cover its bucket and cropped to it, instead of to a
	// square. Nil: every image is cropped to a Resolution square.
	Buckets *bucket.Rules
	Image   ImageEncoder // VAE, or Pixels for --vae none
	// Text encodes the captions; a PooledTextEncoder's pooled embeddings
	// are stored too (shard.FieldPooled).
	Text TextEncoder
	// Geometry stores every record's source size and crop offset, also
	// without buckets (SDXL conditions on them; see shard.Index.Geometry).
	Geometry bool
	// Model identifies the model weights (e.g. a hash of the model folder's
	// files); with the data set and every setting it makes the fingerprint.
	Model string
	DType tensor.DType // of the stored tensors: F32, F16 or BF16
	// Workers decode and transform in parallel (default: one per CPU).
	Workers int
	// BatchSize images and captions go to the encoders at once (default 8).
	BatchSize int
	// RecordsPerShard must be a multiple of BatchSize, so a resumed run
	// encodes the same batches (default: shards of about 256 MiB, at most
	// 1000 records).
	RecordsPerShard int
	Overwrite       bool
	// Progress, when set, is called after each batch is written and once
	// more at the end (with Done set).
	Progress func(Progress)
	// Now stamps the index; nil means time.Now.
	Now func() time.Time
}

// Progress is the state of a run.
type Progress struct {
	Items   int // input items dealt with (records and skips), resumed ones included
	Total   int // items the source lists, -1 if unknown
	Records int // records written, resumed ones included
	Skipped int // items skipped so far (this run's)
	Resumed int // records kept from an earlier run
	Elapsed time.Duration
	Done    bool
}

// Result is what a run made.
type Result struct {
	Index   *shard.Index
	Resumed int // records kept from an interrupted earlier run (or, for a repair, the sound shards)
	// AlreadyComplete is set when Out held a finished output with the same
	// fingerprint whose shards all verify (sizes and SHA-256); nothing was
	// done.
	AlreadyComplete bool
	// Repaired lists the damaged shards of a finished output that were
	// rebuilt, and what was wrong with each.
	Repaired []shard.Problem
}

// Settings are the named values that identify the output: model, data
// set, encoders and every setting that changes a record's bytes. The index
// keeps them so that a mismatch names what differs.
func Settings(r data.Reader, o Options) map[string]string {
	t := o.Transform
	crop := "random"
	if t.CenterCrop {
		crop = "center"
	}
	m := map[string]string{
		"model": o.Model, "data": r.Describe(), "image": o.Image.Name(), "text": o.Text.Name(),
		"resolution": strconv.Itoa(t.Resolution), "crop": crop, "flip": strconv.FormatBool(t.Flip),
		"filter": t.Filter.String(), "seed": strconv.FormatUint(t.Seed, 10), "dtype": o.DType.String(),
		"batch": strconv.Itoa(o.BatchSize),
	}
	if b := o.Buckets; b != nil {
		m["buckets"] = fmt.Sprintf("%d-%d/%d", b.Min, b.Max, b.Step)
	}
	return m
}

// Fingerprint is the string of Settings that identifies the output; its
// form is that of earlier versions, so their outputs still resume (buckets
// are named at the end, only when set).
func Fingerprint(r data.Reader, o Options) string {
	s := Settings(r, o)
	fp := fmt.Sprintf("model=%s data=%q image=%s text=%s resolution=%s crop=%s flip=%s filter=%s seed=%s dtype=%s batch=%s",
		s["model"], s["data"], s["image"], s["text"], s["resolution"], s["crop"], s["flip"], s["filter"], s["seed"], s["dtype"], s["batch"])
	if b, ok := s["buckets"]; ok {
		fp += " buckets=" + b
	}
	return fp
}

// Fields are the tensors of every record for these encoders.
func Fields(o Options) []shard.Field {
	r := o.Transform.Resolution
	img := o.Image.OutShape(r, r)
	var f []shard.Field
	if o.Image.HasStd() {
		f = append(f, shard.Field{Name: shard.FieldLatentMean, DType: o.DType, Shape: img},
			shard.Field{Name: shard.FieldLatentStd, DType: o.DType, Shape: img})
	} else {
		f = append(f, shard.Field{Name: shard.FieldPixels, DType: o.DType, Shape: img})
	}
	f = append(f, shard.Field{Name: shard.FieldText, DType: o.DType, Shape: o.Text.OutShape()})
	if p, ok := o.Text.(PooledTextEncoder); ok {
		f = append(f, shard.Field{Name: shard.FieldPooled, DType: o.DType, Shape: p.PooledShape()})
	}
	return f
}

// Buckets are the shard buckets of o's bucket table: each size with the
// fields of an image of that size (nil without buckets).
func Buckets(o Options) []shard.Bucket {
	if o.Buckets == nil {
		return nil
	}
	var out []shard.Bucket
	for _, s := range o.Buckets.Table() {
		f := Fields(o)
		for i := range f {
			if f[i].Name != shard.FieldText && f[i].Name != shard.FieldPooled {
				f[i].Shape = o.Image.OutShape(s.H, s.W)
			}
		}
		out = append(out, shard.Bucket{Width: s.W, Height: s.H, Fields: f})
	}
	return out
}

func (o *Options) defaults() error {
	if o.Image == nil || o.Text == nil {
		return errors.New("prep: an image and a text encoder are needed")
	}
	if o.Transform.Resolution <= 0 {
		return fmt.Errorf("prep: resolution %d", o.Transform.Resolution)
	}
	if b := o.Buckets; b != nil {
		b.Resolution = o.Transform.Resolution
		if err := b.Check(); err != nil {
			return fmt.Errorf("--buckets at resolution %d: %w; set --bucket-min, --bucket-max and --bucket-step to fit", o.Transform.Resolution, err)
		}
	}
	if o.Workers <= 0 {
		o.Workers = runtime.NumCPU()
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 8
	}
	if o.RecordsPerShard <= 0 {
		bytes := 0
		for _, f := range Fields(*o) {
			bytes += f.Bytes()
		}
		n := min(max((256<<20)/bytes, 1), 1000)
		o.RecordsPerShard = max(n/o.BatchSize, 1) * o.BatchSize
	}
	if o.RecordsPerShard%o.BatchSize != 0 {
		return fmt.Errorf("prep: %d records per shard is not a multiple of the batch size %d", o.RecordsPerShard, o.BatchSize)
	}
	return nil
}

// job is one record for the workers, with the reader's skips since the
// previous record.
type job struct {
	seq   int
	rec   data.Record
	ok    bool // rec is set (false: only skips, at the end of the input)
	skips []data.Skip
}

// event is one item's outcome, in input order.
type event struct {
	skip   *shard.Skip
	item   int
	key    string
	text   string
	pixel  []float32 // (3, R, R), or (3, H, W) of its bucket
	bucket int       // position in the bucket table (0 without buckets)
	geo    shard.Geometry
}

type result struct {
	seq    int
	events []event
	err    error
}

// Run reads every record of r, transforms and encodes it and writes the
// shards, index and skipped-items report into o.Out. Unreadable images and
// empty captions are skipped and reported, never fatal. Cancelling ctx
// stops the run; finished shards stay, and a later Run resumes after them.
func Run(ctx context.Context, r data.Reader, o Options) (*Result, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	t := o.Transform
	var table []bucket.Size
	if o.Buckets != nil {
		table = o.Buckets.Table()
	}
	fp := Fingerprint(r, o)
	w, err := shard.Create(o.Out, shard.Options{
		Fingerprint: fp, Settings: Settings(r, o), Fields: Fields(o), Buckets: Buckets(o), Geometry: o.Geometry, RecordsPerShard: o.RecordsPerShard, Overwrite: o.Overwrite, Now: o.Now,
		Meta: map[string]string{
			shard.MetaDataset: r.Describe(), shard.MetaImageEncoder: o.Image.Name(), shard.MetaTextEncoder: o.Text.Name(),
			shard.MetaResolution: strconv.Itoa(t.Resolution), shard.MetaCenterCrop: strconv.FormatBool(t.CenterCrop),
			shard.MetaRandomFlip: strconv.FormatBool(t.Flip), shard.MetaFilter: t.Filter.String(), shard.MetaSeed: strconv.FormatUint(t.Seed, 10),
		},
	})
	if errors.Is(err, shard.ErrComplete) {
		rd, oerr := shard.Open(o.Out, 1)
		if oerr != nil {
			return nil, oerr
		}
		defer rd.Close()
		return &Result{Index: rd.Index, AlreadyComplete: true}, nil
	}
	if err != nil {
		return nil, err
	}
	resumed, fromItem := w.Resume()
	repairs := w.Repairs()
	// want selects the input items this run makes records of: those after
	// the kept shards, or for a repair those of the damaged shards; end is
	// the item reading can stop at.
	want, end := func(item int) bool { return item >= fromItem }, math.MaxInt
	if len(repairs) > 0 {
		want = func(item int) bool {
			return slices.ContainsFunc(repairs, func(r shard.Repair) bool { return item >= r.From && item < r.To })
		}
		end = repairs[len(repairs)-1].To
	}

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	jobs := make(chan job, 2*o.Workers)
	results := make(chan result, 2*o.Workers)

	// Reader: records in order, numbered; items before fromItem were done
	// by the interrupted run.
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(jobs)
		seen, seq := 0, 0
		for {
			rec, err := r.Next()
			if err == nil && rec.Item >= end {
				err = io.EOF
			}
			var skips []data.Skip
			for _, s := range r.Skipped()[seen:] {
				if want(s.Item) && s.Item < end {
					skips = append(skips, s)
				}
			}
			seen = len(r.Skipped())
			if err != nil && err != io.EOF {
				select {
				case results <- result{seq: seq, err: err}:
				case <-ctx.Done():
				}
				return
			}
			j := job{seq: seq, rec: rec, ok: err == nil && want(rec.Item), skips: skips}
			if !j.ok && len(skips) == 0 && err == nil {
				continue
			}
			select {
			case jobs <- j:
				seq++
			case <-ctx.Done():
				return
			}
			if err == io.EOF {
				return
			}
		}
	}()

	// Workers: decode and transform.
	var workers sync.WaitGroup
	for range o.Workers {
		workers.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer workers.Done()
			for j := range jobs {
				res := result{seq: j.seq, events: skipEvents(j.skips)}
				if j.ok {
					e := process(j.rec, t, table)
					if o.Geometry && e.skip == nil {
						e.geo = sdxlGeometry(e, t, table)
					}
					res.events = append(res.events, e)
				}
				select {
				case results <- res:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	go func() {
		workers.Wait()
		close(results)
	}()

	// Collector: reorder, batch, encode, write.
	c := collector{w: w, o: o, table: table, start: time.Now(), total: r.Len(), records: resumed, resumed: resumed, items: fromItem}
	pending := map[int]result{}
	next := 0
	for res := range results {
		if res.err != nil {
			w.Abort()
			return nil, fmt.Errorf("prep: %w", res.err)
		}
		pending[res.seq] = res
		for {
			p, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			next++
			for _, e := range p.events {
				if err := c.add(e); err != nil {
					w.Abort()
					return nil, err
				}
				if err := ctx.Err(); err != nil {
					return nil, interrupted(w, o.Out, err)
				}
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, interrupted(w, o.Out, err)
	}
	if err := c.flush(); err != nil {
		w.Abort()
		return nil, err
	}
	idx, err := w.Close(c.items)
	if err != nil {
		return nil, err
	}
	c.progress(true)
	res := &Result{Index: idx, Resumed: resumed}
	for _, r := range repairs {
		res.Repaired = append(res.Repaired, r.Problem)
	}
	return res, nil
}

// interrupted stops the writer of a cancelled run (a signal) and says what
// was kept and how to go on: the finished shards stay, and the same command
// resumes after them.
func interrupted(w *shard.Writer, out string, err error) error {
	w.Abort()
	shards, records := w.Finished()
	return fmt.Errorf("interrupted (%w): the %d finished shards (%d records) in %s are kept; rerun the same command to resume", err, shards, records, out)
}

func skipEvents(skips []data.Skip) []event {
	var out []event
	for _, s := range skips {
		ss := shard.Skip(s)
		out = append(out, event{skip: &ss, item: s.Item})
	}
	return out
}

// process decodes and transforms one record — to a square, or with a
// bucket table to the bucket of the nearest aspect ratio — or says why it
// is skipped. Its geometry is the source size and the crop's top-left in
// the resized image (before any flip).
func process(rec data.Record, t data.Transform, table []bucket.Size) event {
	e := event{item: rec.Item, key: rec.Key, text: data.PickCaption(rec.Captions, t.Seed, rec.Item)}
	img, err := t.Decode(rec.Image)
	switch {
	case err != nil:
	case table != nil:
		var resized bucket.Size
		e.bucket, resized = bucket.Select(table, img.W, img.H)
		b := table[e.bucket]
		e.pixel = make([]float32, 3*b.H*b.W) // (3, H, W)
		e.geo = shard.Geometry{Width: img.W, Height: img.H}
		e.geo.Top, e.geo.Left, err = t.ApplyBucket(img, rec.Item, b, resized, e.pixel)
	default:
		r := t.Resolution
		e.pixel = make([]float32, 3*r*r) // (3, R, R)
		if err = t.Apply(img, rec.Item, e.pixel); err == nil {
			// Apply's crop: the resized size and CropRect as it computes them.
			w, h := data.ResizedSize(img.W, img.H, r)
			crop := t.CropRect(w, h, rec.Item)
			e.geo = shard.Geometry{Width: img.W, Height: img.H, Top: crop.Min.Y, Left: crop.Min.X}
		}
	}
	if err != nil {
		reason := data.ReasonUnreadableImage
		if errors.Is(err, data.ErrTooManyPixels) {
			reason = data.ReasonTooManyPixels
		}
		e.skip = &shard.Skip{Item: rec.Item, Source: rec.Source, Key: rec.Key, Reason: reason, Detail: err.Error()}
		e.pixel = nil
	}
	return e
}

// sdxlGeometry is the geometry of e's record as SDXL conditions on it:
// process's, with the crop's left edge counted in the image as flipped when
// it is. diffusers' train_text_to_image_sdxl.py flips before cropping and
// records that crop's offset as crop_top_left; kohya's sd-scripts mirrors
// the crop's left edge for a flipped image. The transforms crop and then
// flip, which is the crop at w − cw − left of the flipped image (resized
// width w, crop width cw).
func sdxlGeometry(e event, t data.Transform, table []bucket.Size) shard.Geometry {
	g := e.geo
	if !t.Flipped(e.item) {
		return g
	}
	w, _ := data.ResizedSize(g.Width, g.Height, t.Resolution)
	cw := t.Resolution
	if table != nil {
		_, resized := bucket.Select(table, g.Width, g.Height)
		w, cw = resized.W, table[e.bucket].W
	}
	g.Left = w - cw - g.Left
	return g
}

// collector gathers events in input order into batches of BatchSize
// images, encodes them and hands records and skips to the writer in order.
type collector struct {
	w       *shard.Writer
	o       Options
	table   []bucket.Size // nil without buckets
	batch   []event       // images and the skips between them
	n       int           // images in batch
	start   time.Time
	total   int
	records int
	resumed int
	skipped int
	items   int // input items dealt with
}

func (c *collector) add(e event) error {
	c.batch = append(c.batch, e)
	if e.skip == nil {
		c.n++
	}
	if c.n == c.o.BatchSize {
		return c.flush()
	}
	return nil
}

// size is the image height and width of bucket b (the square without
// buckets).
func (c *collector) size(b int) (h, w int) {
	if c.table == nil {
		return c.o.Transform.Resolution, c.o.Transform.Resolution
	}
	return c.table[b].H, c.table[b].W
}

// flush encodes the batch and writes its records and skips in input order.
// Images of one size are encoded together: the whole batch without
// buckets, each bucket's images (in the order the batch first holds them)
// with buckets.
func (c *collector) flush() error {
	var caps []string
	var groups [][]int  // batch positions of the images of each size
	at := map[int]int{} // bucket → its group
	for i, e := range c.batch {
		if e.skip != nil {
			continue
		}
		caps = append(caps, e.text)
		g, ok := at[e.bucket]
		if !ok {
			g, at[e.bucket] = len(groups), len(groups)
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], i)
	}
	means := make([][]float32, len(c.batch)) // per batch position: (OutShape...)
	stds := make([][]float32, len(c.batch))
	var emb, pooled []float32
	txt := numel(c.o.Text.OutShape())
	pt, hasPooled := c.o.Text.(PooledTextEncoder)
	pn := 0
	if hasPooled {
		pn = numel(pt.PooledShape())
	}
	for _, g := range groups {
		h, w := c.size(c.batch[g[0]].bucket)
		x := make([]float32, 0, len(g)*3*h*w) // (n, 3, h, w)
		for _, i := range g {
			x = append(x, c.batch[i].pixel...)
		}
		mean, std, err := c.o.Image.EncodeImages(x, len(g), h, w)
		if err != nil {
			return fmt.Errorf("prep: image encoder %s: %w", c.o.Image.Name(), err)
		}
		img := numel(c.o.Image.OutShape(h, w))
		if len(mean) != len(g)*img || (c.o.Image.HasStd() && len(std) != len(g)*img) {
			return fmt.Errorf("prep: image encoder %s returned %d and %d values for %d images of %dx%d, want %d each",
				c.o.Image.Name(), len(mean), len(std), len(g), w, h, len(g)*img)
		}
		for k, i := range g {
			means[i] = mean[k*img : (k+1)*img]
			if c.o.Image.HasStd() {
				stds[i] = std[k*img : (k+1)*img]
			}
		}
	}
	if c.n > 0 {
		var err error
		if hasPooled {
			emb, pooled, err = pt.EncodeTextsPooled(caps)
		} else {
			emb, err = c.o.Text.EncodeTexts(caps)
		}
		if err != nil {
			return fmt.Errorf("prep: text encoder %s: %w", c.o.Text.Name(), err)
		}
		if len(emb) != c.n*txt || len(pooled) != c.n*pn {
			return fmt.Errorf("prep: text encoder %s returned %d states and %d pooled values for %d captions, want %d and %d",
				c.o.Text.Name(), len(emb), len(pooled), c.n, c.n*txt, c.n*pn)
		}
	}
	i := 0
	for k, e := range c.batch {
		c.items = max(c.items, e.item+1)
		if e.skip != nil {
			c.w.Skip(*e.skip)
			c.skipped++
			continue
		}
		rec := shard.Record{Item: e.item, Key: e.key, Caption: e.text, Bucket: e.bucket, Geometry: e.geo}
		rec.Data = append(rec.Data, means[k])
		if c.o.Image.HasStd() {
			rec.Data = append(rec.Data, stds[k])
		}
		rec.Data = append(rec.Data, emb[i*txt:(i+1)*txt])
		if hasPooled {
			rec.Data = append(rec.Data, pooled[i*pn:(i+1)*pn])
		}
		if err := c.w.Add(rec); err != nil {
			return fmt.Errorf("prep: %s: %w", filepath.Base(c.o.Out), err)
		}
		i++
		c.records++
	}
	c.batch, c.n = c.batch[:0], 0
	c.progress(false)
	return nil
}

func (c *collector) progress(done bool) {
	if c.o.Progress == nil {
		return
	}
	c.o.Progress(Progress{Items: c.items, Total: c.total, Records: c.records, Skipped: c.skipped,
		Resumed: c.resumed, Elapsed: time.Since(c.start), Done: done})
}

func numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}
