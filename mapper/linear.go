package mapper

import "fmt"

// Linear returns the mapper that puts page i at block firstBlock+i for
// i < nblocks, as one extent [0, nblocks) without a boundary. Pages at
// or past nblocks are a hole to infinity. It implements Bounded
// (MaxBlock = firstBlock+nblocks).
//
// Linear panics if firstBlock+nblocks overflows uint64.
func Linear(firstBlock, nblocks uint64) Mapper {
	if !addOK(firstBlock, nblocks) {
		panic(fmt.Sprintf("mapper: Linear(%d, %d): firstBlock+nblocks overflows uint64", firstBlock, nblocks))
	}
	return linear{first: firstBlock, n: nblocks}
}

type linear struct{ first, n uint64 }

func (l linear) Map(index uint64) (Extent, error) {
	if index < l.n {
		return Extent{Index: 0, Block: l.first, Len: l.n}, nil
	}
	return hole(l.n, 0, true), ErrHole
}

func (l linear) MaxBlock() uint64 { return l.first + l.n }

func (l linear) IndexLimit() uint64 { return l.n }
