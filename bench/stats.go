package bench

import (
	"math"
	"reflect"
	"slices"
	"strconv"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Latency is a latency distribution in microseconds, with the numbers
// fio gives for its completion latency: how many, mean, standard
// deviation, min, max and percentiles.
type Latency struct {
	N     int64   `json:"n"`
	Mean  float64 `json:"mean"`
	Stdev float64 `json:"stdev"`
	Min   float64 `json:"min"`
	Max   float64 `json:"max"`
	P1    float64 `json:"p1"`
	P5    float64 `json:"p5"`
	P10   float64 `json:"p10"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P95   float64 `json:"p95"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	P9999 float64 `json:"p9999"`
}

// latencyQuantiles are the percentiles Latency holds, in field order
// after Max (fio's names for them: "1.000000" … "99.990000").
var latencyQuantiles = []float64{1, 5, 10, 50, 90, 95, 99, 99.9, 99.99}

func (l *Latency) quantiles() []*float64 {
	return []*float64{&l.P1, &l.P5, &l.P10, &l.P50, &l.P90, &l.P95, &l.P99, &l.P999, &l.P9999}
}

// latencyOf reads a Latency off h, which holds nanoseconds (nil when h
// is empty).
func latencyOf(h *hdr.Histogram) *Latency {
	if h == nil || h.TotalCount() == 0 {
		return nil
	}
	us := func(ns float64) float64 { return ns / 1e3 }
	l := &Latency{
		N:     h.TotalCount(),
		Mean:  us(h.Mean()),
		Stdev: us(h.StdDev()),
		Min:   us(float64(h.Min())),
		Max:   us(float64(h.Max())),
	}
	for i, q := range l.quantiles() {
		*q = us(float64(h.ValueAtQuantile(latencyQuantiles[i])))
	}
	return l
}

// fioLatency makes a Latency of fio's clat_ns object.
func fioLatency(n int64, mean, stdev, minNs, maxNs float64, pct map[string]float64) *Latency {
	if n <= 0 {
		return nil
	}
	l := &Latency{N: n, Mean: mean / 1e3, Stdev: stdev / 1e3, Min: minNs / 1e3, Max: maxNs / 1e3}
	for i, q := range l.quantiles() {
		*q = pct[strconv.FormatFloat(latencyQuantiles[i], 'f', 6, 64)] / 1e3
	}
	return l
}

// Batch is a distribution of batch sizes: requests handed to the ring
// per Submit call, or completions delivered per reap.
type Batch struct {
	N    int64   `json:"n"` // batches
	Mean float64 `json:"mean"`
	Min  float64 `json:"min"`
	P50  float64 `json:"p50"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	// FioPercent is fio's own distribution (iodepth_submit,
	// iodepth_complete): the percent of its calls that carried up to
	// 4, 8, 16, 32, 64 requests (the key), or more (">=64").
	FioPercent map[string]float64 `json:"fio_percent,omitempty"`
}

// batchOf reads a Batch off h (nil when h is empty).
func batchOf(h *hdr.Histogram) *Batch {
	if h == nil || h.TotalCount() == 0 {
		return nil
	}
	return &Batch{
		N:    h.TotalCount(),
		Mean: h.Mean(),
		Min:  float64(h.Min()),
		P50:  float64(h.ValueAtQuantile(50)),
		P99:  float64(h.ValueAtQuantile(99)),
		Max:  float64(h.Max()),
	}
}

// cpuUsage is the process's CPU time so far, user and system.
type cpuUsage struct {
	user, sys time.Duration
}

// setCPU sets s's CPU fields to what was used between c0 and c1.
func (s *Sample) setCPU(c0, c1 cpuUsage) {
	s.CPUUserSeconds = (c1.user - c0.user).Seconds()
	s.CPUSystemSeconds = (c1.sys - c0.sys).Seconds()
	s.CPUSeconds = s.CPUUserSeconds + s.CPUSystemSeconds
}

// medianSample is the sample whose every number is the median of that
// number over ss: float and integer fields, and field by field the
// structs behind pointers (Latency, Batch, DeviceIO) over the samples
// that have them. A bool is true if it is in any sample; strings and
// maps are the first sample's. Rates are the medians of the per-run
// rates, not recomputed from median counts.
func medianSample(ss []Sample) Sample {
	vs := make([]reflect.Value, len(ss))
	for i := range ss {
		vs[i] = reflect.ValueOf(&ss[i]).Elem()
	}
	var out Sample
	medianInto(reflect.ValueOf(&out).Elem(), vs)
	return out
}

func medianInto(dst reflect.Value, src []reflect.Value) {
	for f := 0; f < dst.NumField(); f++ {
		if !dst.Type().Field(f).IsExported() {
			continue
		}
		d := dst.Field(f)
		col := make([]reflect.Value, len(src))
		for i, s := range src {
			col[i] = s.Field(f)
		}
		switch d.Kind() {
		case reflect.Float64:
			v := make([]float64, len(col))
			for i, c := range col {
				v[i] = c.Float()
			}
			d.SetFloat(median(v))
		case reflect.Int, reflect.Int64:
			v := make([]float64, len(col))
			for i, c := range col {
				v[i] = float64(c.Int())
			}
			d.SetInt(int64(math.Round(median(v))))
		case reflect.Bool:
			for _, c := range col {
				if c.Bool() {
					d.SetBool(true)
				}
			}
		case reflect.Pointer:
			var have []reflect.Value
			for _, c := range col {
				if !c.IsNil() {
					have = append(have, c.Elem())
				}
			}
			if len(have) == 0 || d.Type().Elem().Kind() != reflect.Struct {
				continue
			}
			p := reflect.New(d.Type().Elem())
			medianInto(p.Elem(), have)
			d.Set(p)
		default:
			if len(col) > 0 {
				d.Set(col[0])
			}
		}
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// round4 rounds x to 4 significant digits.
func round4(x float64) float64 {
	if x == 0 || math.IsNaN(x) || math.IsInf(x, 0) {
		return x
	}
	r, err := strconv.ParseFloat(strconv.FormatFloat(x, 'g', 4, 64), 64)
	if err != nil {
		return x
	}
	return r
}

// roundFloats rounds every float64 that v points to, through structs,
// pointers, slices and maps, to 4 significant digits: reports carry
// measurements, not 0.30239277350000004. Integers (bytes, pages, I/Os)
// are left exact.
func roundFloats(v any) {
	roundValue(reflect.ValueOf(v))
}

func roundValue(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			roundValue(v.Elem())
		}
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				roundValue(v.Field(i))
			}
		}
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			roundValue(v.Index(i))
		}
	case reflect.Map:
		if v.Type().Elem().Kind() == reflect.Float64 {
			for _, k := range v.MapKeys() {
				v.SetMapIndex(k, reflect.ValueOf(round4(v.MapIndex(k).Float())))
			}
		}
	case reflect.Float64:
		if v.CanSet() {
			v.SetFloat(round4(v.Float()))
		}
	}
}
