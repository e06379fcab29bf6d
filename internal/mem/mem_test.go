package mem

import "testing"

func TestPrefault(t *testing.T) {
	s := make([]uint64, 10000)
	for i := range s {
		s[i] = 7
	}
	Prefault(s)
	for i, v := range s {
		if want := uint64(7); i%512 == 0 {
			want = 0
			if v != want {
				t.Fatalf("s[%d] = %d, want 0", i, v)
			}
		} else if v != want {
			t.Fatalf("s[%d] = %d, want untouched 7", i, v)
		}
	}
	Prefault([]struct{}{}) // no element size: no panic
	Prefault([]byte(nil))
}
