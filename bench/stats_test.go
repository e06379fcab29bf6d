package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
)

// TestLatencyOf: every number fio gives for a latency, read off a
// histogram of known values (ns in, µs out).
func TestLatencyOf(t *testing.T) {
	h := newHist()
	for v := int64(1); v <= 10000; v++ {
		_ = h.RecordValue(v * 1000) // 1 µs … 10 ms
	}
	l := latencyOf(h)
	if l == nil || l.N != 10000 {
		t.Fatalf("latency %+v, want 10000 values", l)
	}
	near := func(name string, got, want float64) {
		t.Helper()
		if got < want*0.99 || got > want*1.01 {
			t.Errorf("%s = %v µs, want about %v", name, got, want)
		}
	}
	near("mean", l.Mean, 5000.5)
	near("stdev", l.Stdev, 2886.8)
	near("min", l.Min, 1)
	near("max", l.Max, 10000)
	near("p1", l.P1, 100)
	near("p5", l.P5, 500)
	near("p10", l.P10, 1000)
	near("p50", l.P50, 5000)
	near("p90", l.P90, 9000)
	near("p95", l.P95, 9500)
	near("p99", l.P99, 9900)
	near("p99.9", l.P999, 9990)
	near("p99.99", l.P9999, 9999)
	if latencyOf(newHist()) != nil {
		t.Fatal("latency of an empty histogram is not nil")
	}
}

// TestFioSample reads fio 3.33's JSON (with a note line before it): the
// runtime, CPU user and system, every latency number and the batch
// distributions.
func TestFioSample(t *testing.T) {
	out, err := os.ReadFile("testdata/fio-3.33.json")
	if err != nil {
		t.Fatal(err)
	}
	s, err := fioSample(out, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if s.Bytes != 8<<20 || s.Pages != 2048 || s.Seconds != 0.011 || s.IOs != 128 {
		t.Fatalf("sample %+v", s)
	}
	if s.CPUUserSeconds != 0.002 || s.CPUSystemSeconds != 0 || s.CPUSeconds != 0.002 {
		t.Fatalf("CPU user %v system %v total %v; want 20%% of 10 ms user", s.CPUUserSeconds, s.CPUSystemSeconds, s.CPUSeconds)
	}
	l := s.Latency
	if l == nil || l.N != 128 || l.P1 != 211.968 || l.P50 != 618.496 || l.P9999 != 1019.904 || l.Min != 186.608 || l.Max != 1017.774 || l.Mean <= 0 || l.Stdev <= 0 {
		t.Fatalf("latency %+v", l)
	}
	if s.SubmitBatch == nil || s.SubmitBatch.FioPercent["4"] != 100 || s.CompleteBatch == nil || s.CompleteBatch.FioPercent["8"] != 0.819672 {
		t.Fatalf("batches %+v %+v", s.SubmitBatch, s.CompleteBatch)
	}
	if got := fmtBatches(s.SubmitBatch, s.CompleteBatch); got != "batches: requests per submit ≤4: 100%; completions per reap ≤4: 99%, ≤8: 1%" {
		t.Fatalf("batches printed as %q", got)
	}
	if _, err := fioSample([]byte("fio: something went wrong"), 4096); err == nil || !strings.Contains(err.Error(), "cannot read its JSON") {
		t.Fatalf("garbage: %v", err)
	}
}

// TestMedianSample: every number is the median of that number; structs
// behind pointers field by field over the samples that have them.
func TestMedianSample(t *testing.T) {
	ss := []Sample{
		{Bytes: 1, Seconds: 3, CPUUserSeconds: 1, Latency: &Latency{N: 5, P50: 10, P9999: 100}, SubmitBatch: &Batch{Mean: 4}},
		{Bytes: 3, Seconds: 1, CPUUserSeconds: 3, Latency: &Latency{N: 7, P50: 30, P9999: 300}},
		{Bytes: 2, Seconds: 2, CPUUserSeconds: 2, Latency: &Latency{N: 6, P50: 20, P9999: 200}, SubmitBatch: &Batch{Mean: 8}},
	}
	m := medianSample(ss)
	if m.Bytes != 2 || m.Seconds != 2 || m.CPUUserSeconds != 2 || m.Latency == nil || m.Latency.N != 6 || m.Latency.P50 != 20 ||
		m.Latency.P9999 != 200 || m.SubmitBatch == nil || m.SubmitBatch.Mean != 6 || m.CompleteBatch != nil {
		t.Fatalf("median %+v, latency %+v, batch %+v", m, m.Latency, m.SubmitBatch)
	}
	if _, err := json.Marshal(m); err != nil {
		t.Fatal(err)
	}
}

// TestRoundFloats: every float in a report is rounded to 4 significant
// digits, through pointers, slices and maps; integers stay exact.
func TestRoundFloats(t *testing.T) {
	for _, tc := range []struct{ in, want float64 }{
		{0.30239277350000004, 0.3024}, {1234567.89, 1235000}, {2.5e9, 2.5e9}, {0.000123456, 0.0001235}, {0, 0}, {-7.77777, -7.778},
	} {
		if got := round4(tc.in); got != tc.want {
			t.Errorf("round4(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	r := Report{Results: []Result{{Name: "engine", Sample: Sample{Bytes: 1073741823, BytesPerSec: 3.141592653e9, Latency: &Latency{P50: 12.3456}},
		Runs: []Sample{{Seconds: 0.30239277350000004, SubmitBatch: &Batch{FioPercent: map[string]float64{"4": 99.180328}}}}}}}
	roundFloats(&r)
	got := r.Results[0]
	if got.Bytes != 1073741823 || got.BytesPerSec != 3.142e9 || got.Latency.P50 != 12.35 || got.Runs[0].Seconds != 0.3024 ||
		got.Runs[0].SubmitBatch.FioPercent["4"] != 99.18 {
		t.Fatalf("rounded: %+v, latency %+v, run %+v", got, got.Latency, got.Runs[0])
	}
	b, _ := json.Marshal(r)
	if strings.Contains(string(b), "0.30239") {
		t.Fatalf("JSON still has 0.30239…: %s", b)
	}
}

// TestFmtRateInRange: a rate is never printed outside its own printed
// min–max, whatever rounding does (3.735e9 once printed as
// "3.73 GB/s (3.74–3.74)").
func TestFmtRateInRange(t *testing.T) {
	check := func(v, lo, hi float64) {
		t.Helper()
		s := fmtRate(v, lo, hi, true)
		var pv, plo, phi float64
		var unit string
		if _, err := fmt.Sscanf(s, "%f %s (%f–%f)", &pv, &unit, &plo, &phi); err != nil {
			t.Fatalf("fmtRate(%g, %g, %g) = %q: %v", v, lo, hi, s, err)
		}
		if plo > pv || pv > phi {
			t.Fatalf("fmtRate(%g, %g, %g) = %q: the value is outside its range", v, lo, hi, s)
		}
	}
	check(3.735e9, 3.735e9, 3.735e9)
	check(4.425e9, 4.425e9, 4.425e9)
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		v := math.Round(r.Float64()*1e6) * math.Pow(10, float64(r.IntN(7))) // ties at the rounding half are common
		lo := v * (1 - r.Float64()*0.01*float64(r.IntN(2)))
		hi := v * (1 + r.Float64()*0.01*float64(r.IntN(2)))
		check(v, lo, hi)
	}
}
