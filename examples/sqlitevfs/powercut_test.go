package sqlitevfs

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"testing"

	"github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
	"github.com/wbengine/wbengine/ring"
	"github.com/wbengine/wbengine/ring/powercut"
)

// cutRing is the power-cut model (an interposer of the engine's ring)
// that counts the write results passing through and cuts the power
// right after the armed one: the writes that completed by then and no
// flush covered survive as a random subset, whatever was still in flight
// fails. So a cut falls between any two writes, also in the middle of
// the writes of one sync. (Reads change nothing on the device, and a cut
// right after a flush is the case of a cut after the next write with
// that write lost: counting writes only loses no outcome.)
type cutRing struct {
	*powercut.Model
	seed  uint64
	n     atomic.Int64 // write results seen so far
	cutAt atomic.Int64 // the write result to cut after (0: not armed)
	cut   atomic.Bool
	cutN  atomic.Int64 // write results seen when the power was cut
}

// Done implements ring.Interposer: the model first, then the count.
func (c *cutRing) Done(a *ring.Attempt) {
	c.Model.Done(a)
	if a.Req.Op != ring.OpWrite || a.Result <= 0 {
		return
	}
	if n := c.n.Add(1); n >= c.cutAt.Load() && c.cutAt.Load() > 0 {
		c.cutNow()
	}
}

func (c *cutRing) cutNow() {
	if c.cut.CompareAndSwap(false, true) {
		c.cutN.Store(c.n.Load())
		c.Model.Cut(c.seed)
	}
}

// arm sets the cut after a random one of the next span write
// completions.
func (c *cutRing) arm(rng *rand.Rand, span int) {
	c.cutAt.Store(c.n.Load() + 1 + int64(rng.IntN(span)))
}

// powerRound is one round of the power-cut test.
type powerRound struct {
	acked     []int64
	cutAt     int64 // write completions delivered before the cut
	betweenTx bool  // the cut fell between two transactions
	stats     powercut.Stats
	check     bankCheck
	err       error // a failed check
}

// cutSpan is how many write completions after the third commit the cut
// may fall after: tens of transactions where every commit writes (5–15
// writes each); where only checkpoints write (WAL under NORMAL, or with
// its sync broken: about ten writes every 250–300 transactions), a few
// checkpoints.
func cutSpan(o DBOptions, brk breakMode) int {
	if o.JournalMode == "wal" && (o.Synchronous == "normal" || brk == breakSkipJournal) {
		return 30
	}
	return 200
}

// maxCutTx bounds the transactions of a round: the power is cut
// between two transactions at a random one of the first maxCutTx, if no
// write completion was cut after before.
const maxCutTx = 400

// runPowerRound sets up a bank on a fresh file, runs transactions over
// a ring that models a volatile write cache, cuts the power at a random
// request after the third commit, and checks the bank on a fresh file
// holding only the durable image.
func runPowerRound(t *testing.T, o DBOptions, brk breakMode, seed uint64) powerRound {
	t.Helper()
	var r powerRound
	path := loopdevtest.ShmFile(t, bankDevice)
	if err := setupBank(path, o); err != nil {
		t.Fatalf("setup: %v", err)
	}
	initial, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cr := &cutRing{seed: seed}
	opt := testOptions()
	opt.broken = brk
	opt.Engine.FlushAlways = true // the model has a volatile cache, whatever the target says
	opt.Engine.OpenRing = func(tg *ring.Target, rc ring.Config) (ring.Ring, error) {
		cr.Model = powercut.New(tg.Size, initial)
		rc.Interposers = append(rc.Interposers, cr)
		return ring.Open(tg, "auto", rc)
	}
	v, err := Open(path, opt)
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.OpenDB(bankDB, o)
	if err != nil {
		t.Fatal(err)
	}
	b, err := newBank(c, seed)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 9))
	// The cut falls after a random write completion, or between two
	// transactions, whichever comes first.
	cutTx := int64(4 + rng.IntN(maxCutTx-4))
	for id := int64(1); ; id++ {
		if id == 4 {
			cr.arm(rng, cutSpan(o, brk))
		}
		if id == cutTx {
			r.betweenTx = true
			cr.cutNow()
			break
		}
		if err := b.transfer(id); err != nil {
			if !cr.cut.Load() {
				t.Fatalf("transaction %d failed before the power cut: %v", id, err)
			}
			break
		}
		// COMMIT returned: under FULL its sync completed before the cut.
		r.acked = append(r.acked, id)
		if cr.cut.Load() {
			break
		}
	}
	r.cutAt = cr.cutN.Load()
	b.close()
	c.Close() // fails or not: the device is gone
	v.Close()
	r.stats = cr.Model.Stats()
	// Reopen from the durable image alone, on a fresh file.
	img := cr.Model.Image()
	fresh := loopdevtest.ShmFile(t, bankDevice)
	if err := os.WriteFile(fresh, img, 0o644); err != nil {
		t.Fatal(err)
	}
	v2, err := Open(fresh, testOptions())
	if err != nil {
		r.err = err
		return r
	}
	defer v2.Close()
	r.check, r.err = checkBank(v2, o, r.acked, o.Synchronous != "normal")
	return r
}

func (r powerRound) String() string {
	where := fmt.Sprintf("cut after write completion %d", r.cutAt)
	if r.betweenTx {
		where = fmt.Sprintf("cut between transactions (after %d write completions)", r.cutAt)
	}
	return fmt.Sprintf("%d commits acknowledged; %s; durable writes %d, unflushed at the cut %d lost, %d kept",
		len(r.acked), where, r.stats.Durable, r.stats.Lost, r.stats.Survived)
}

// TestPowerCut: cut the power of a modelled volatile write cache at a
// random request while bank transactions run; the durable image,
// reopened, passes SQLite's integrity check with the total balance
// unchanged and (synchronous=FULL) every acknowledged transaction there.
func TestPowerCut(t *testing.T) {
	for _, m := range crashModes() {
		t.Run(modeName(m.o), func(t *testing.T) {
			r := rand.New(rand.NewPCG(2027, uint64(len(m.o.JournalMode)+len(m.o.Synchronous))))
			for round := 0; round < m.rounds; round++ {
				pr := runPowerRound(t, m.o, breakNone, r.Uint64())
				t.Logf("round %d: %v; reopened: %v", round, pr, pr.check)
				if pr.err != nil {
					t.Errorf("round %d: %v", round, pr.err)
				}
			}
		})
	}
}
