package demo
import "testing"
func TestTmpWrite(t *testing.T) {
	if err := WriteTokenizer("/tmp/demotok/pos", Options{Size: 32, Grid: 3}); err != nil { t.Fatal(err) }
}
