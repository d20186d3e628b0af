// Package prepare turns a captioned image set into training shards: a
// reader's records are decoded and transformed by parallel workers, encoded
// in batches (VAE latents or pixels, CLIP text embeddings) by pluggable
// encoders, and written in input order by the shard writer, so the output
// is the same for any number of workers and a killed run resumes. Command
// is the prep tool's whole job: it opens the source and the model's
// encoders, runs the pipeline and writes shard.UncondFile beside the shards.
package prepare

import "slices"

// ImageEncoder encodes batches of preprocessed images. A VAE returns its
// posterior's mean and standard deviation, so training draws a fresh latent
// each epoch; Pixels passes images through.
type ImageEncoder interface {
	// Name identifies the encoder and its weights, for the fingerprint.
	Name() string
	// OutShape is the shape of one encoded (3, h, w) image, e.g. (4, h/8, w/8).
	OutShape(h, w int) []int
	// HasStd reports whether EncodeImages returns a standard deviation.
	HasStd() bool
	// EncodeImages encodes x (n, 3, h, w), values in [-1, 1], into mean
	// (n, OutShape...) and, when HasStd, std of the same shape.
	EncodeImages(x []float32, n, h, w int) (mean, std []float32, err error)
}

// TextEncoder encodes batches of captions.
type TextEncoder interface {
	// Name identifies the encoder, its weights and settings (clip skip),
	// for the fingerprint.
	Name() string
	// OutShape is the shape of one caption's embedding, (77, D).
	OutShape() []int
	// EncodeTexts returns the embeddings (n, OutShape...) of n captions.
	EncodeTexts(captions []string) ([]float32, error)
}

// PooledTextEncoder is a TextEncoder that also gives each caption a pooled
// embedding (SDXL's); prep then stores it as shard.FieldPooled.
type PooledTextEncoder interface {
	TextEncoder
	// PooledShape is the shape of one caption's pooled embedding, (P).
	PooledShape() []int
	// EncodeTextsPooled returns the states (n, OutShape...) and the pooled
	// embeddings (n, PooledShape...) of n captions.
	EncodeTextsPooled(captions []string) (states, pooled []float32, err error)
}

// Pixels is the image "encoder" of --vae none: it stores the transformed
// pixels themselves.
type Pixels struct{}

func (Pixels) Name() string            { return "pixels" }
func (Pixels) OutShape(h, w int) []int { return []int{3, h, w} }
func (Pixels) HasStd() bool            { return false }
func (Pixels) EncodeImages(x []float32, n, h, w int) ([]float32, []float32, error) {
	return slices.Clone(x), nil, nil
}
