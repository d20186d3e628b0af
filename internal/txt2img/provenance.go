package txt2img

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"

	"github.com/zerodiff/zerodiff/internal/sd"
)

// provenance names the weights an image came from in its parameters text,
// the way A1111's infotext does: two images from different UNets or LoRAs
// never carry the same text.
type provenance struct {
	model     string // --model's name, without .safetensors (imageio.ModelName)
	modelHash string // SHA-256 of the UNet weights sampled with, hex
	unet      string // --unet's file name ("stdin" for -), "" for the model's own
	lora      string // --lora's name, without its extension
	loraHash  string // the LoRA's hash, hex (see loraHash)
}

// modelHash is the SHA-256 of the model's own UNet weights: the single-file
// checkpoint itself (A1111's model hash), or the UNet files of a diffusers
// folder in their order.
func modelHash(model string, folder bool) (string, error) {
	files := []string{model}
	if folder {
		var err error
		if files, err = sd.ModelFiles(model, "unet"); err != nil {
			return "", err
		}
	}
	h := sha256.New()
	for _, f := range files {
		if err := hashFile(h, f, 0); err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// hashFile adds the bytes of path from offset on to h.
func hashFile(h hash.Hash, path string, offset int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

// loraHash is the hash A1111 shows for a LoRA in "Lora hashes": for a
// safetensors file the SHA-256 of everything after the header
// (sd-webui-additional-networks' addnet_hash_safetensors, which A1111's
// extensions-builtin/Lora/network.py uses), so editing metadata keeps it.
func loraHash(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	var n [8]byte
	_, err = io.ReadFull(f, n[:])
	f.Close()
	if err != nil {
		return "", fmt.Errorf("%s: not a safetensors file: %w", path, err)
	}
	size := binary.LittleEndian.Uint64(n[:])
	if size > 1<<30 {
		return "", fmt.Errorf("%s: not a safetensors file: header of %d bytes", path, size)
	}
	h := sha256.New()
	if err := hashFile(h, path, 8+int64(size)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
