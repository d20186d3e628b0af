package data

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// imageExts are the file name endings taken for images (any case).
var imageExts = []string{".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}

func isImageName(name string) bool {
	return slices.Contains(imageExts, strings.ToLower(filepath.Ext(name)))
}

// OpenTxtPairs reads a folder (and its subfolders) of images each with a
// caption file of the same name and the ending captionExt (default ".txt"):
// a.jpg + a.txt. Items are the names in sorted order; an image without a
// caption file and a caption file without an image are skipped items. Keys
// are the image paths relative to dir. An image or caption file that is a
// symlink pointing out of dir is a skipped item, never read.
func OpenTxtPairs(dir, captionExt string) (Reader, error) {
	if captionExt == "" {
		captionExt = ".txt"
	}
	root := newFolder(dir)
	dir = root.dir // absolute: Describe names the data set the same from any folder
	type pair struct{ image, caption string }
	pairs := map[string]*pair{} // path without ending → files
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ext := filepath.Ext(p)
		stem := strings.TrimSuffix(p, ext)
		switch {
		case strings.EqualFold(ext, captionExt):
			if pairs[stem] == nil {
				pairs[stem] = &pair{}
			}
			pairs[stem].caption = p
		case isImageName(p):
			if pairs[stem] == nil {
				pairs[stem] = &pair{}
			}
			if pairs[stem].image == "" || p < pairs[stem].image {
				pairs[stem].image = p
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("image+caption folder: %w", err)
	}
	if len(pairs) == 0 {
		return nil, fmt.Errorf("image+caption folder %s: no images", dir)
	}
	stems := make([]string, 0, len(pairs))
	for s := range pairs {
		stems = append(stems, s)
	}
	slices.Sort(stems)
	entries := make([]entry, len(stems))
	for i, s := range stems {
		p := pairs[s]
		e := entry{key: relSlash(dir, p.image), path: p.image}
		switch {
		case p.image == "":
			e.key, e.path, e.reason = relSlash(dir, p.caption), p.caption, ReasonCaptionNoImage
		case p.caption == "":
			e.reason = ReasonNoCaptionFile
		default:
			b, reason, detail := root.readFile(p.caption)
			switch reason {
			case "":
				e.captions = []string{string(b)}
			case ReasonOutsideFolder:
				e.reason, e.detail = reason, detail
			default:
				if detail == "" {
					detail = reason
				}
				e.reason, e.detail = ReasonUnreadableRecord, fmt.Sprintf("caption file %s: %s", relSlash(dir, p.caption), detail)
			}
		}
		entries[i] = e
	}
	return &listReader{root: root, describe: fmt.Sprintf("txtpairs %s caption=%s", dir, captionExt), entries: entries}, nil
}

// relSlash is path relative to dir with forward slashes, an item's key.
func relSlash(dir, path string) string {
	rel, err := filepath.Rel(dir, path)
	if err != nil {
		return path
	}
	return filepath.ToSlash(rel)
}

// Open picks the reader for path: a .parquet file or a folder of them, an
// imagefolder (a folder with metadata.jsonl or metadata.csv), else a folder
// of image + .txt pairs.
func Open(path string, cols Columns) (Reader, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("data set: %w", err)
	}
	if !st.IsDir() {
		if strings.HasSuffix(path, ".parquet") {
			return OpenParquet([]string{path}, cols)
		}
		return nil, fmt.Errorf("data set %s: a file must be .parquet; otherwise give a folder", path)
	}
	for _, m := range []string{"metadata.jsonl", "metadata.csv"} {
		if _, err := os.Stat(filepath.Join(path, m)); err == nil {
			return OpenImageFolder(path, cols)
		}
	}
	matches, _ := filepath.Glob(filepath.Join(path, "*.parquet"))
	if len(matches) > 0 {
		return OpenParquet([]string{path}, cols)
	}
	return OpenTxtPairs(path, "")
}
