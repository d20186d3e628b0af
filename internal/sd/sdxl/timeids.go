package sdxl

import (
	"fmt"

	"github.com/zerodiff/zerodiff/internal/sd/unet"
)

// Size is an image size or position in pixels, height first as SDXL's
// micro-conditioning orders it.
type Size struct{ H, W int }

// TimeIDs is _get_add_time_ids: original size (h, w), crop top-left (top,
// left), target size (h, w), in that order. Training passes each image's
// size before resizing and its crop; inference passes (size, (0, 0), size).
func TimeIDs(original, cropTopLeft, target Size) [unet.NumTimeIDs]float32 {
	return [unet.NumTimeIDs]float32{
		float32(original.H), float32(original.W),
		float32(cropTopLeft.H), float32(cropTopLeft.W),
		float32(target.H), float32(target.W),
	}
}

// CheckTimeIDs is _get_add_time_ids' check that the UNet's add_embedding
// takes what the pipeline builds: addition_time_embed_dim for each of the 6
// ids plus the pooled width (text_encoder_2's projection_dim).
func CheckTimeIDs(c unet.Config, pooledDim int) error {
	if !c.TextTime() {
		return fmt.Errorf("unet config: addition_embed_type is not \"text_time\": the UNet takes no SDXL time ids")
	}
	passed := *c.AdditionTimeEmbedDim*unet.NumTimeIDs + pooledDim
	if want := *c.ProjectionClassEmbeddingsInputDim; passed != want {
		return fmt.Errorf("unet config: projection_class_embeddings_input_dim is %d, but %d time ids of addition_time_embed_dim %d and text_encoder_2's projection_dim %d make %d",
			want, unet.NumTimeIDs, *c.AdditionTimeEmbedDim, pooledDim, passed)
	}
	return nil
}
