package train

import (
	"fmt"
	"slices"

	"github.com/zerodiff/zerodiff/internal/rng"
	"github.com/zerodiff/zerodiff/internal/sd/sdxl"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
)

// Dataset is the training data as the loop reads it: prep's shards.
type Dataset interface {
	// Len is the number of records.
	Len() int
	// Get returns record i.
	Get(i int) (Sample, error)
	// Uncond is the text states (S, D) of the empty caption, trained on in
	// place of a caption with probability caption_dropout.
	Uncond() []float32
	// Shapes: one image's latent or pixels (C, h, w), one caption's states (S, D).
	ImageShape() [3]int
	TextShape() [2]int
	// ScalingFactor multiplies VAE latents (1 for pixels).
	ScalingFactor() float64
}

// Bucketed is a Dataset made with aspect-ratio buckets (prep --buckets):
// the records of a bucket share an image shape, and each global batch is
// drawn from one bucket (see bucketOrder).
type Bucketed interface {
	Dataset
	// BucketShapes are the buckets' image shapes (C, h, w), none for a
	// data set made without buckets.
	BucketShapes() [][3]int
	// Bucket is record i's bucket, its position in BucketShapes.
	Bucket(i int) int
	// Members lists each bucket's records, in record order.
	Members() [][]int
}

// bucketsOf returns d as a Bucketed data set, and whether it has buckets.
func bucketsOf(d Dataset) (Bucketed, bool) {
	b, ok := d.(Bucketed)
	return b, ok && len(b.BucketShapes()) > 0
}

// Sample is one record: the VAE's latent distribution (C, h, w) — or the
// pixels, with Std nil — and the caption's text states (S, D). Records
// prepared for SDXL also hold the caption's pooled embedding (P) and the
// image's micro-conditioning: its size before resizing and its crop's
// top-left, (height, width) and (top, left) as sdxl.TimeIDs takes them.
type Sample struct {
	Mean, Std []float32
	Text      []float32
	Pooled    []float32 // (P), nil for SD 1.x/2.x records
	Original  [2]int    // (h, w) of the source image
	CropTL    [2]int    // (top, left) of the crop in the resized image
}

// Pooled is a Dataset prepared for SDXL (see Sample): every sample holds a
// pooled embedding and its geometry.
type Pooled interface {
	Dataset
	// PooledDim is P, 0 for a data set without pooled embeddings.
	PooledDim() int
	// UncondPooled is the empty caption's pooled embedding (P), trained on
	// with Uncond for caption dropout.
	UncondPooled() []float32
}

// pooledOf returns d as a Pooled data set and its pooled width, 0 for
// data without pooled embeddings.
func pooledOf(d Dataset) (Pooled, int) {
	p, ok := d.(Pooled)
	if !ok {
		return nil, 0
	}
	return p, p.PooledDim()
}

// Random streams: every draw is a pure function of (seed, purpose, epoch,
// sample index), so results do not depend on how many ranks drew them, and a
// resumed run draws what the uninterrupted one would have.
const (
	streamOrder uint64 = iota + 1
	streamLatent
	streamNoise
	streamTimestep
	streamDropout
	streamOffset
	streamBucket  // a bucket's order in an epoch, by bucket
	streamBatches // the order of an epoch's batches over the buckets
)

func stream(seed, purpose uint64, epoch, index int) *rng.Stream {
	return rng.New(seed, purpose<<56|uint64(epoch)<<32|uint64(index))
}

// epochOrder is the shuffled order of n records in epoch e (Fisher–Yates).
func epochOrder(seed uint64, epoch, n int) []int {
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	s := stream(seed, streamOrder, epoch, 0)
	for i := n - 1; i > 0; i-- {
		j := s.Intn(i + 1)
		order[i], order[j] = order[j], order[i]
	}
	return order
}

// bucketOrder is epoch e's order of a bucketed data set whose buckets hold
// records members, for global batches of g, as kohya's sd-scripts orders
// an epoch (library/train_util.py BaseDataset.shuffle_buckets): each
// bucket's records shuffled, cut into batches of g, and the batches of all
// buckets shuffled. A bucket's last records that fill no batch (fewer than
// g) are left out of the epoch, as a PyTorch DataLoader's drop_last does;
// the shuffle leaves out others the next epoch. kohya trains them as a
// smaller batch instead, which would make a step's batch size depend on the
// bucket. The order depends on (seed, epoch, g) only: ranks split each
// batch, so the samples of a step do not depend on the world size, and the
// data position (epoch, sample) of a checkpoint names the same samples on
// resume — unless the global batch changed (resume_allow_changes), which
// cuts the epoch into other batches from that position on.
func bucketOrder(seed uint64, epoch int, members [][]int, g int) []int {
	type batch struct{ bucket, first int }
	var batches []batch
	shuffled := make([][]int, len(members))
	for b, m := range members {
		o := slices.Clone(m)
		s := stream(seed, streamBucket, epoch, b)
		for i := len(o) - 1; i > 0; i-- {
			j := s.Intn(i + 1)
			o[i], o[j] = o[j], o[i]
		}
		shuffled[b] = o
		for k := 0; k+g <= len(o); k += g {
			batches = append(batches, batch{b, k})
		}
	}
	s := stream(seed, streamBatches, epoch, 0)
	for i := len(batches) - 1; i > 0; i-- {
		j := s.Intn(i + 1)
		batches[i], batches[j] = batches[j], batches[i]
	}
	order := make([]int, 0, len(batches)*g)
	for _, b := range batches {
		order = append(order, shuffled[b.bucket][b.first:b.first+g]...)
	}
	return order
}

// epochLen is the number of samples an epoch's order holds: every record,
// or for a bucketed data set each bucket's whole global batches.
func (j *Job) epochLen() int {
	d, ok := bucketsOf(j.Data)
	if !ok {
		return j.Data.Len()
	}
	g, n := j.globalBatch(), 0
	for _, m := range d.Members() {
		n += len(m) / g * g
	}
	return n
}

// epochSamples is epoch e's order of records: a shuffle of them all
// (epochOrder), or bucketOrder for a bucketed data set.
func (j *Job) epochSamples(epoch int) []int {
	if d, ok := bucketsOf(j.Data); ok {
		return bucketOrder(j.Cfg.Seed, epoch, d.Members(), j.globalBatch())
	}
	return epochOrder(j.Cfg.Seed, epoch, j.Data.Len())
}

// draws is what the loop draws for one sample, and how it conditions SDXL.
type draws struct {
	noiseOffset, captionDropout float64
	timesteps                   int
	// factor is the pixels per latent cell (the VAE's downsampling, 1 for
	// pixels): SDXL's target size is the micro-batch's crop in pixels.
	factor int
}

// makeMicro assembles the micro-batch of records idx (in epoch e): a fresh
// latent from each record's distribution, the noise and timestep, and the
// empty caption in place of the caption with probability captionDropout.
// For SDXL data (Pooled) it adds each record's pooled embedding — the empty
// caption's on the same dropout draw — and its time ids: the original size
// and crop prep recorded and the target size, the latent size times
// d.factor, as train_text_to_image_sdxl.py's compute_time_ids builds
// add_time_ids (original_size + crops_coords_top_left + target_size).
// In a bucketed data set the records must share a bucket, whose shape the
// micro-batch has.
func makeMicro(data Dataset, seed uint64, epoch int, idx []int, d draws) (Micro, error) {
	shape := data.ImageShape()
	if bd, ok := bucketsOf(data); ok && len(idx) > 0 {
		b := bd.Bucket(idx[0])
		for _, i := range idx {
			if bd.Bucket(i) != b {
				return Micro{}, fmt.Errorf("micro-batch of records %v mixes buckets %d and %d", idx, b, bd.Bucket(i))
			}
		}
		shape = bd.BucketShapes()[b]
	}
	c, h, w := shape[0], shape[1], shape[2]
	s, dim := data.TextShape()[0], data.TextShape()[1]
	per, tper := c*h*w, s*dim
	b := len(idx)
	m := Micro{
		X0: make([]float32, b*per), Noise: make([]float32, b*per), Ctx: make([]float32, b*tper), T: make([]int, b),
		Shape: [4]int{b, c, h, w}, CtxShape: [3]int{b, s, dim},
	}
	pooled, pdim := pooledOf(data)
	if pdim > 0 {
		m.Pooled, m.TimeIDs = make([]float32, b*pdim), make([]float32, b*unet.NumTimeIDs)
	}
	target := sdxl.Size{H: h * max(d.factor, 1), W: w * max(d.factor, 1)}
	scale := float32(data.ScalingFactor())
	for k, i := range idx {
		r, err := data.Get(i)
		if err != nil {
			return m, err
		}
		if len(r.Mean) != per || len(r.Text) != tper || (r.Std != nil && len(r.Std) != per) {
			return m, fmt.Errorf("record %d: %d image values and %d text values, want %d and %d", i, len(r.Mean), len(r.Text), per, tper)
		}
		x0 := m.X0[k*per : (k+1)*per]
		if r.Std != nil {
			stream(seed, streamLatent, epoch, i).Normal(x0)
			for j := range x0 {
				x0[j] = (r.Mean[j] + r.Std[j]*x0[j]) * scale
			}
		} else {
			copy(x0, r.Mean)
		}
		noise := m.Noise[k*per : (k+1)*per]
		stream(seed, streamNoise, epoch, i).Normal(noise)
		if d.noiseOffset != 0 {
			off := make([]float32, c) // (C) one offset per channel, as diffusers' noise_offset
			stream(seed, streamOffset, epoch, i).Normal(off)
			for ch := range c {
				for j := range h * w {
					noise[ch*h*w+j] += float32(d.noiseOffset) * off[ch]
				}
			}
		}
		m.T[k] = stream(seed, streamTimestep, epoch, i).Intn(d.timesteps)
		text, pool := r.Text, r.Pooled
		if d.captionDropout > 0 && stream(seed, streamDropout, epoch, i).Uniform() < d.captionDropout {
			text = data.Uncond()
			if pdim > 0 {
				pool = pooled.UncondPooled()
			}
		}
		copy(m.Ctx[k*tper:], text)
		if pdim > 0 {
			if len(pool) != pdim {
				return m, fmt.Errorf("record %d: %d pooled text values, want %d", i, len(pool), pdim)
			}
			copy(m.Pooled[k*pdim:], pool)
			ids := sdxl.TimeIDs(sdxl.Size{H: r.Original[0], W: r.Original[1]}, sdxl.Size{H: r.CropTL[0], W: r.CropTL[1]}, target)
			copy(m.TimeIDs[k*unet.NumTimeIDs:], ids[:])
		}
	}
	return m, nil
}
