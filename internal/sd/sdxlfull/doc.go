// Package sdxlfull checks zerodiff's SDXL path at the real SDXL base 1.0
// architecture, not only the tiny test config: its tests load a full-size
// SDXL diffusers folder with seeded random weights (written in float16 by
// testdata/sdxl/make_sdxl.py, never committed) through the real loaders and
// compare one UNet forward with added conditioning, both text encoders,
// encode_prompt and a VAE decode against diffusers and transformers. Run it
// with `make parity-sdxl`. The package has no code of its own.
package sdxlfull
