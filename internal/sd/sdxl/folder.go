package sdxl

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// IsFolder reports whether the diffusers folder dir holds an SDXL model:
// its model_index.json lists text_encoder_2, or its unet/config.json sets
// addition_embed_type "text_time". A file that is absent says no; one that
// is not JSON is an error naming it.
func IsFolder(dir string) (bool, error) {
	var idx map[string]json.RawMessage
	if ok, err := readJSON(filepath.Join(dir, "model_index.json"), &idx); err != nil || (ok && idx["text_encoder_2"] != nil) {
		return ok, err
	}
	var u struct {
		AdditionEmbedType *string `json:"addition_embed_type"`
	}
	ok, err := readJSON(filepath.Join(dir, "unet", "config.json"), &u)
	return ok && u.AdditionEmbedType != nil && *u.AdditionEmbedType == "text_time", err
}

// readJSON decodes the file p into v; ok is false when p does not exist.
func readJSON(p string, v any) (ok bool, err error) {
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("%s: %w", p, err)
	}
	return true, nil
}
