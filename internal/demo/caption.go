package demo

import (
	"fmt"
	"strings"
)

// Caption is the text of labels: "a red circle", "an orange square", "a blue triangle at the top
// left".
func Caption(l Labels) string {
	article := "a"
	if l.Color == Orange {
		article = "an"
	}
	s := article + " " + l.Color.String() + " " + l.Shape.String()
	if l.Position != NoPosition {
		s += " at the " + l.Position.String()
	}
	return s
}

// ParseCaption reads a caption of the demo's grammar, "a|an <color> <shape> [at the <position>]",
// case and spacing aside, and says which word breaks it when it does not fit; prompts given as text
// are scored through it.
func ParseCaption(text string) (Labels, error) {
	words := strings.Fields(strings.ToLower(text))
	l := Labels{Color: NoColor, Shape: NoShape, Position: NoPosition}
	fail := func(i int, want string) (Labels, error) {
		got := "the end"
		if i < len(words) {
			got = fmt.Sprintf("%q", words[i])
		}
		return Labels{}, fmt.Errorf("demo caption %q: word %d: want %s, got %s", text, i+1, want, got)
	}
	if len(words) == 0 || words[0] != "a" && words[0] != "an" {
		return fail(0, `"a" or "an"`)
	}
	if len(words) < 2 || !lookup(colorNames[:], words[1], &l.Color) {
		return fail(1, "a color ("+strings.Join(colorNames[:], ", ")+")")
	}
	if len(words) < 3 || !lookup(shapeNames[:], words[2], &l.Shape) {
		return fail(2, "a shape ("+strings.Join(shapeNames[:], ", ")+")")
	}
	if len(words) == 3 {
		return l, nil
	}
	if words[3] != "at" {
		return fail(3, `"at" or the end`)
	}
	if len(words) < 5 || words[4] != "the" {
		return fail(4, `"the"`)
	}
	if len(words) < 6 || !lookup(positionNames[:], strings.Join(words[5:], " "), &l.Position) {
		return fail(5, "a position ("+strings.Join(positionNames[:], ", ")+")")
	}
	return l, nil
}

// lookup sets *v to the index of word in names and reports whether it is there.
func lookup[T ~int8](names []string, word string, v *T) bool {
	for i, n := range names {
		if n == word {
			*v = T(i)
			return true
		}
	}
	return false
}
