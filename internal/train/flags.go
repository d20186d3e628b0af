package train

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// Overlay copies into dst the fields of src whose command-line flags were
// given (set lists their names), so flags override the config file and
// everything else keeps the file's value. Flag names follow the kong tags on
// Config: the `name` tag, else the lower-cased field name, under the
// `prefix` of each embedded section.
func Overlay(dst, src *Config, set []string) {
	want := map[string]bool{}
	for _, s := range set {
		want[s] = true
	}
	overlay(reflect.ValueOf(dst).Elem(), reflect.ValueOf(src).Elem(), "", want)
}

func overlay(dst, src reflect.Value, prefix string, want map[string]bool) {
	t := dst.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Tag.Get("kong") == "-" {
			continue
		}
		if _, ok := f.Tag.Lookup("embed"); ok {
			overlay(dst.Field(i), src.Field(i), prefix+f.Tag.Get("prefix"), want)
			continue
		}
		name := f.Tag.Get("name")
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		if want[prefix+name] {
			dst.Field(i).Set(src.Field(i))
		}
	}
}

// FlagDefaults is the default of each config flag as --help shows it, by
// flag name: DefaultConfig's value, so the help and the run never disagree.
// Flags whose default is empty are left out.
func FlagDefaults() map[string]string {
	out := map[string]string{}
	def := DefaultConfig()
	defaults(reflect.ValueOf(&def).Elem(), "", out)
	return out
}

func defaults(v reflect.Value, prefix string, out map[string]string) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Tag.Get("kong") == "-" {
			continue
		}
		if _, ok := f.Tag.Lookup("embed"); ok {
			defaults(v.Field(i), prefix+f.Tag.Get("prefix"), out)
			continue
		}
		name := f.Tag.Get("name")
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		x := v.Field(i)
		var s string
		switch x.Kind() {
		case reflect.Slice:
			parts := make([]string, x.Len())
			for k := range parts {
				parts[k] = fmt.Sprint(x.Index(k).Interface())
			}
			s = strings.Join(parts, ",")
		case reflect.Float64:
			s = strconv.FormatFloat(x.Float(), 'g', -1, 64)
		default:
			s = fmt.Sprint(x.Interface())
		}
		if s != "" {
			out[prefix+name] = s
		}
	}
}
