package train

import "github.com/zerodiff/zerodiff/internal/rng"

// MemoryData is a Dataset held in memory.
type MemoryData struct {
	Records []Sample
	Empty   []float32 // (S, D) states of the empty caption
	Image   [3]int
	Text    [2]int
	Scale   float64
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
