package sqlitevfs

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ncruces/go-sqlite3"
)

var stressLong = flag.Bool("stress.long", false, "run the long crash, power-cut and broken-sync rounds (make stress)")

// The bank workload: nAccounts accounts of initialBalance each, padded
// so that a page holds a few of them and a transfer touches pages far
// apart, with an index on the balance; each transaction makes 2–5
// random transfers, counts itself in meta.txcount and inserts its id
// into committed. Whatever a crash does, integrity_check must pass (the
// index must agree with the table), the total balance must stay
// nAccounts × initialBalance, txcount must equal the rows of committed,
// and every transaction whose COMMIT returned (under synchronous=FULL)
// must be in committed. A transaction touches 6–15 pages far apart: a
// crash that keeps some of its pages and loses others is seen.
const (
	nAccounts      = 400
	initialBalance = 1000
	accountPad     = 700 // bytes per row: ~5 accounts a page
	bankDB         = "bank.db"
)

// bankRegions: a database region far larger than the workload needs
// (about 600 KiB after a few thousand transactions), a journal region
// that fits its transactions and a WAL region that fits the 1000 pages
// after which SQLite checkpoints, and some.
func bankRegions() []Region { return DatabaseRegions(bankDB, 8<<20, 2<<20, 6<<20) }

const bankDevice = 20 << 20

// createBank makes the schema and the accounts.
func createBank(c *sqlite3.Conn) error {
	return c.Exec(fmt.Sprintf(`
		CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, pad BLOB NOT NULL);
		CREATE INDEX accounts_balance ON accounts(balance);
		CREATE TABLE committed(id INTEGER PRIMARY KEY);
		CREATE TABLE meta(txcount INTEGER NOT NULL);
		INSERT INTO meta VALUES (0);
		BEGIN;
		WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < %d)
		INSERT INTO accounts SELECT i, %d, zeroblob(%d) FROM n;
		COMMIT;`, nAccounts, initialBalance, accountPad))
}

// bank runs transfers on one connection.
type bank struct {
	c                 *sqlite3.Conn
	rng               *rand.Rand
	move, done, count *sqlite3.Stmt
}

func newBank(c *sqlite3.Conn, seed uint64) (*bank, error) {
	b := &bank{c: c, rng: rand.New(rand.NewPCG(seed, 42))}
	var err error
	if b.move, _, err = c.Prepare(`UPDATE accounts SET balance = balance + ? WHERE id = ?`); err != nil {
		return nil, err
	}
	if b.done, _, err = c.Prepare(`INSERT INTO committed(id) VALUES (?)`); err != nil {
		b.move.Close()
		return nil, err
	}
	if b.count, _, err = c.Prepare(`UPDATE meta SET txcount = txcount + 1`); err != nil {
		b.move.Close()
		b.done.Close()
		return nil, err
	}
	return b, nil
}

func (b *bank) close() {
	b.move.Close()
	b.done.Close()
	b.count.Close()
}

// transfer runs transaction id. When it returns nil, COMMIT returned
// SQLITE_OK.
func (b *bank) transfer(id int64) error {
	if err := b.c.Exec(`BEGIN`); err != nil {
		return err
	}
	err := func() error {
		for k := 2 + b.rng.IntN(4); k > 0; k-- {
			from := 1 + b.rng.IntN(nAccounts)
			to := 1 + b.rng.IntN(nAccounts-1)
			if to >= from {
				to++
			}
			amt := int64(1 + b.rng.IntN(100))
			for _, m := range [2]struct {
				acct int
				d    int64
			}{{from, -amt}, {to, amt}} {
				b.move.BindInt64(1, m.d)
				b.move.BindInt(2, m.acct)
				if err := b.move.Exec(); err != nil {
					return err
				}
			}
		}
		if err := b.count.Exec(); err != nil {
			return err
		}
		b.done.BindInt64(1, id)
		if err := b.done.Exec(); err != nil {
			return err
		}
		return b.c.Exec(`COMMIT`)
	}()
	if err != nil && !b.c.GetAutocommit() {
		b.c.Exec(`ROLLBACK`)
	}
	return err
}

// bankCheck is what a reopened database says.
type bankCheck struct {
	integrity string
	total     int64
	accounts  int64
	committed int64
	txcount   int64
	maxID     int64
	missing   []int64 // acknowledged ids not in committed
}

// checkBank opens the bank on v and checks it: integrity_check ok, all
// accounts there, total balance unchanged, and (when full) every
// acknowledged id in committed. It returns what it saw and an error
// naming each failed check.
func checkBank(v *VFS, o DBOptions, acked []int64, full bool) (bankCheck, error) {
	var r bankCheck
	c, err := v.OpenDB(bankDB, o)
	if err != nil {
		return r, fmt.Errorf("reopen: %w", err)
	}
	defer c.Close()
	var errs []error
	if r.integrity, err = textRows(c, `PRAGMA integrity_check`); err != nil {
		return r, fmt.Errorf("integrity_check: %w", err)
	}
	if r.integrity != "ok" {
		errs = append(errs, fmt.Errorf("integrity_check: %s", r.integrity))
	}
	s, _, err := c.Prepare(`SELECT count(*), coalesce(sum(balance), 0) FROM accounts`)
	if err != nil {
		return r, errors.Join(append(errs, err)...)
	}
	if s.Step() {
		r.accounts, r.total = s.ColumnInt64(0), s.ColumnInt64(1)
	}
	if err := s.Close(); err != nil {
		errs = append(errs, err)
	}
	if r.accounts != nAccounts || r.total != nAccounts*initialBalance {
		errs = append(errs, fmt.Errorf("%d accounts with total balance %d, want %d with %d", r.accounts, r.total, nAccounts, nAccounts*initialBalance))
	}
	have := map[int64]bool{}
	s, _, err = c.Prepare(`SELECT id FROM committed`)
	if err != nil {
		return r, errors.Join(append(errs, err)...)
	}
	for s.Step() {
		id := s.ColumnInt64(0)
		have[id] = true
		r.maxID = max(r.maxID, id)
	}
	if err := s.Close(); err != nil {
		errs = append(errs, err)
	}
	r.committed = int64(len(have))
	s, _, err = c.Prepare(`SELECT txcount FROM meta`)
	if err != nil {
		return r, errors.Join(append(errs, err)...)
	}
	if s.Step() {
		r.txcount = s.ColumnInt64(0)
	}
	if err := s.Close(); err != nil {
		errs = append(errs, err)
	}
	if r.txcount != r.committed {
		errs = append(errs, fmt.Errorf("meta.txcount %d, but %d rows in committed", r.txcount, r.committed))
	}
	for _, id := range acked {
		if !have[id] {
			r.missing = append(r.missing, id)
		}
	}
	if full && len(r.missing) > 0 {
		errs = append(errs, fmt.Errorf("%d acknowledged transactions missing from committed (first %d)", len(r.missing), r.missing[0]))
	}
	return r, errors.Join(errs...)
}

func (r bankCheck) String() string {
	return fmt.Sprintf("integrity %s, %d accounts, total %d, %d committed rows (max id %d, txcount %d), %d acknowledged missing",
		r.integrity, r.accounts, r.total, r.committed, r.maxID, r.txcount, len(r.missing))
}

// textRows runs a query and joins its first column's rows with "; ".
func textRows(c *sqlite3.Conn, sql string) (string, error) {
	s, _, err := c.Prepare(sql)
	if err != nil {
		return "", err
	}
	defer s.Close()
	var out []string
	for s.Step() {
		out = append(out, s.ColumnText(0))
	}
	return strings.Join(out, "; "), s.Err()
}

// setupBank formats path and creates the bank on it.
func setupBank(path string, o DBOptions) error {
	if err := Format(path, bankRegions(), FormatOptions{Force: true}); err != nil {
		return err
	}
	v, err := Open(path, testOptions())
	if err != nil {
		return err
	}
	c, err := v.OpenDB(bankDB, o)
	if err != nil {
		v.Close()
		return err
	}
	err = createBank(c)
	return errors.Join(err, c.Close(), v.Close())
}

// readAcked reads a side file of acknowledged ids (one a line; a last
// line without its newline is ignored).
func readAcked(path string) ([]int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s := string(b)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	} else {
		s = ""
	}
	var ids []int64
	for _, l := range strings.Split(s, "\n") {
		if l == "" {
			continue
		}
		id, err := strconv.ParseInt(l, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: bad line %q", path, l)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// openRetry opens a VFS on a device that a killed process may still
// hold for a moment (its in-flight I/O drains before the device is
// released).
func openRetry(path string, opt Options) (*VFS, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, err := Open(path, opt)
		if err == nil || time.Now().After(deadline) || !isBusy(err) {
			return v, err
		}
		time.Sleep(5 * time.Millisecond)
	}
}
