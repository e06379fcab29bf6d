//go:build iceber

package ring

// BenchmarkNop and BenchmarkNopRoundTrip (bench_test.go) measure the
// iceber backend too when it is compiled in.
func init() { nopBackends = append(nopBackends, "iceber") }
