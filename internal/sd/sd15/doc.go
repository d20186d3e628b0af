// Package sd15 checks zerodiff's Stable Diffusion models at the real SD1.5
// architecture, not only the tiny test configs: its tests load a full-size
// SD1.5 diffusers folder with seeded random weights (written by
// testdata/sd15/make_sd15.py, never committed) through the real loaders and
// compare one UNet forward, one VAE encode and decode and the text encoder
// against diffusers and transformers; its benchmark times one SD1.5 UNet
// forward on 32x32 latents beside testdata/bench/torch_unet.py. Run both with
// `make parity-sd15`. The package has no code of its own.
package sd15
