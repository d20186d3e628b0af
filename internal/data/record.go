// Package data reads captioned image sets (Hugging Face parquet, imagefolder
// with metadata, image + .txt pairs), decodes images to RGB and applies the
// transforms of diffusers' train_text_to_image.py (resize like PIL, center or
// random crop, optional flip, scale to [-1, 1]).
//
// Readers yield encoded image bytes; decoding and transforms run in the
// caller's workers. Items that cannot be used (a missing file, an empty
// caption, a file outside the data set's folder) are never errors: the
// reader passes over them and lists them in Skipped, so one bad item never
// stops a run. A damaged source file is an error, never a panic.
package data

import (
	"strings"
)

// Record is one captioned image as a reader found it.
type Record struct {
	// Item is the record's position among the items the source lists,
	// skipped ones included, so it stays the same whatever else is skipped.
	Item int
	// Key names the item within the data set (a file name, or a parquet row).
	Key string
	// Source is the file the item came from.
	Source string
	// Image is the encoded image file; see DecodeRGB for the formats.
	Image []byte
	// Captions holds every non-empty caption of the item, at least one.
	Captions []string
}

// Skip is an item left out, with the reason.
type Skip struct {
	Item   int    `json:"item"`
	Source string `json:"source"`
	Key    string `json:"key"`
	Reason string `json:"reason"`
	Detail string `json:"detail,omitempty"`
}

// Reasons for skipping an item, the categories a report counts.
const (
	ReasonMissingFile      = "missing file"
	ReasonUnreadableImage  = "unreadable image"
	ReasonEmptyCaption     = "empty caption"
	ReasonNoCaptionFile    = "no caption file"
	ReasonCaptionNoImage   = "caption file without image"
	ReasonUnreadableRecord = "unreadable record"
	// ReasonOutsideFolder is an item whose file lies outside the data set's
	// folder (a "..", an absolute path elsewhere, a symlink pointing out):
	// refused, not read.
	ReasonOutsideFolder = "outside the data set folder"
	// ReasonTooManyPixels is an image whose header declares more pixels than
	// the limit (Transform.MaxPixels): refused before decoding.
	ReasonTooManyPixels = "image too large"
)

// Reader yields the records of a data set in a fixed order.
type Reader interface {
	// Next returns the next usable record, or io.EOF after the last one. Any
	// other error means the source itself is unreadable (a corrupt parquet
	// footer, an unreadable metadata file) and the run cannot go on.
	Next() (Record, error)
	// Len is the number of items the source lists (skipped ones included),
	// or -1 when it is not known before reading.
	Len() int
	// Skipped lists the items passed over so far, in item order.
	Skipped() []Skip
	// Describe names what is read (kind, path, columns), for the
	// fingerprint of an output, so a resumed run cannot mix data sets.
	Describe() string
	Close() error
}

// nonEmpty drops the captions that are empty or only white space; the others
// are kept as written (the CLIP tokenizer cleans white space itself).
func nonEmpty(in []string) []string {
	var out []string
	for _, c := range in {
		if strings.TrimSpace(c) != "" {
			out = append(out, c)
		}
	}
	return out
}
