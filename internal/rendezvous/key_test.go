package rendezvous

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
)

func TestKeyAndPorts(t *testing.T) {
	if !bytes.Equal(Key("s", "job 1"), Key("s", "job 1")) {
		t.Error("Key is not deterministic")
	}
	if bytes.Equal(Key("s", "job 1"), Key("s", "job 2")) || bytes.Equal(Key("s", "job 1"), Key("t", "job 1")) {
		t.Error("Key ignores the scope or the secret")
	}
	bases := map[int]bool{}
	for id := range 100 {
		b := BasePort(fmt.Sprint(4700 + id))
		if b < portLow || b >= portLow+portSpan {
			t.Fatalf("BasePort(%d) = %d outside [%d, %d)", 4700+id, b, portLow, portLow+portSpan)
		}
		if b != BasePort(fmt.Sprint(4700+id)) {
			t.Fatal("BasePort is not deterministic")
		}
		bases[b] = true
	}
	// 100 uniform draws from 20000 ports give 4950/20000 ≈ 0.25 colliding
	// pairs on average; allowing 5 leaves room for an unlucky sound hash
	// while a hash that ignores its input fails.
	if len(bases) < 95 {
		t.Errorf("100 consecutive job ids share %d base ports", 100-len(bases))
	}
	if got := Ports(30000); len(got) != PortCount || got[0] != 30000 || got[PortCount-1] != 30000+PortCount-1 {
		t.Errorf("Ports(30000) = %v", got)
	}
	if got := Ports(65530); !slices.Equal(got, []int{65530, 65531, 65532, 65533, 65534, 65535}) {
		t.Errorf("Ports(65530) = %v", got)
	}
	if got := Ports(0); !slices.Equal(got, []int{0}) {
		t.Errorf("Ports(0) = %v", got)
	}
	if a, b := NewSecret(), NewSecret(); len(a) != 64 || a == b {
		t.Errorf("NewSecret gave %q and %q", a, b)
	}
}
