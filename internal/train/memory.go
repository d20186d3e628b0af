package train

import "github.com/zerodiff/zerodiff/internal/rng"

// MemoryData is a Dataset held in memory.
type MemoryData struct {
	Records []Sample
	Empty   []float32 // (S, D) states of the empty caption
	// EmptyPooled is the empty caption's pooled embedding (P) of SDXL data,
	// whose records then hold Pooled and their geometry; nil otherwise.
	EmptyPooled []float32
	Image       [3]int
	Text        [2]int
	Scale       float64
}

// NewRandomData makes n latent records of standard-normal means, std 0.1 and
// normal text states, seeded: data for tests and benchmarks of the loop.
func NewRandomData(n int, image [3]int, text [2]int, scale float64, seed uint64) *MemoryData {
	per, tper := image[0]*image[1]*image[2], text[0]*text[1]
	d := &MemoryData{Empty: make([]float32, tper), Image: image, Text: text, Scale: scale}
	for i := range n {
		s := Sample{Mean: make([]float32, per), Std: make([]float32, per), Text: make([]float32, tper)}
		r := rng.New(seed, uint64(i))
		r.Normal(s.Mean)
		r.Normal(s.Text)
		for j := range s.Std {
			s.Std[j] = 0.1
		}
		d.Records = append(d.Records, s)
	}
	return d
}

func (d *MemoryData) Len() int                  { return len(d.Records) }
func (d *MemoryData) Get(i int) (Sample, error) { return d.Records[i], nil }
func (d *MemoryData) Uncond() []float32         { return d.Empty }
func (d *MemoryData) ImageShape() [3]int        { return d.Image }
func (d *MemoryData) TextShape() [2]int         { return d.Text }
func (d *MemoryData) ScalingFactor() float64    { return d.Scale }

// NewRandomSDXLData is NewRandomData for SDXL: each record also holds a
// normal pooled embedding of width pooled and a geometry that varies by
// record (original size and crop, as prep records them), and the empty
// caption has a pooled embedding of its own.
func NewRandomSDXLData(n int, image [3]int, text [2]int, pooled int, scale float64, seed uint64) *MemoryData {
	d := NewRandomData(n, image, text, scale, seed)
	d.EmptyPooled = make([]float32, pooled) // (P)
	rng.New(seed, uint64(n)).Normal(d.EmptyPooled)
	for i := range d.Records {
		r := &d.Records[i]
		r.Pooled = make([]float32, pooled) // (P)
		rng.New(seed+1, uint64(i)).Normal(r.Pooled)
		r.Original = [2]int{480 + 16*i, 640 - 8*i}
		r.CropTL = [2]int{i % 3 * 8, i % 5 * 4}
	}
	return d
}

// PooledDim is the width of the records' pooled embeddings, 0 without.
func (d *MemoryData) PooledDim() int { return len(d.EmptyPooled) }

// UncondPooled is the empty caption's pooled embedding.
func (d *MemoryData) UncondPooled() []float32 { return d.EmptyPooled }
