package demo

import (
	"strings"
	"testing"
)

// Every caption of every combo and position parses back to its labels.
func TestCaptionRoundTrip(t *testing.T) {
	n := 0
	for _, k := range Combos(All) {
		for _, p := range append(Positions(3), NoPosition) {
			l := Labels{Color: k.Color, Shape: k.Shape, Position: p}
			got, err := ParseCaption(Caption(l))
			if err != nil || got != l {
				t.Errorf("ParseCaption(%q) = %+v, %v; want %+v", Caption(l), got, err, l)
			}
			n++
		}
	}
	if n != 18*10 {
		t.Fatalf("checked %d captions, want 180", n)
	}
}

func TestParseCaption(t *testing.T) {
	good := []struct {
		text string
		want Labels
	}{
		{"a red circle", Labels{Red, Circle, NoPosition}},
		{"an orange square", Labels{Orange, Square, NoPosition}},
		{"  A  Purple   TRIANGLE ", Labels{Purple, Triangle, NoPosition}},
		{"a blue square at the top left", Labels{Blue, Square, TopLeft}},
		{"a yellow circle at the center", Labels{Yellow, Circle, Center}},
		{"a green triangle at the bottom", Labels{Green, Triangle, Bottom}},
	}
	for _, c := range good {
		got, err := ParseCaption(c.text)
		if err != nil || got != c.want {
			t.Errorf("ParseCaption(%q) = %+v, %v; want %+v", c.text, got, err, c.want)
		}
	}
	bad := []struct{ text, errHas string }{
		{"", `word 1: want "a" or "an", got the end`},
		{"the red circle", `word 1: want "a" or "an", got "the"`},
		{"a pink circle", `word 2: want a color`},
		{"a red", `word 3: want a shape (circle, square, triangle), got the end`},
		{"a red dog", `got "dog"`},
		{"a red circle on the left", `word 4: want "at" or the end, got "on"`},
		{"a red circle at", `word 5: want "the", got the end`},
		{"a red circle at the", `word 6: want a position`},
		{"a red circle at the middle", `word 6: want a position`},
		{"a red circle at the top left corner", `word 6: want a position`},
	}
	for _, c := range bad {
		_, err := ParseCaption(c.text)
		if err == nil || !strings.Contains(err.Error(), c.errHas) {
			t.Errorf("ParseCaption(%q) error %v, want one containing %q", c.text, err, c.errHas)
		}
	}
}

// Captions use only the vocabulary's words.
func TestCaptionWordsInVocabulary(t *testing.T) {
	vocab := map[string]bool{}
	for _, w := range Words() {
		vocab[w] = true
	}
	for _, k := range Combos(All) {
		for _, p := range append(Positions(3), NoPosition) {
			for _, w := range strings.Fields(Caption(Labels{k.Color, k.Shape, p})) {
				if !vocab[w] {
					t.Errorf("caption word %q is not in Words()", w)
				}
			}
		}
	}
}
