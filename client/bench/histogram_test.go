package bench

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestBucketBounds(t *testing.T) {
	// Every value lies within its bucket, buckets are contiguous and in
	// order, and none is wider than 1/subCount of its lowest value.
	prevHi := ^uint64(0)
	for i := range numBuckets {
		lo, hi := bucketBounds(i)
		if lo != prevHi+1 {
			t.Fatalf("bucket %d starts at %d; the previous one ended at %d", i, lo, prevHi)
		}
		if hi < lo {
			t.Fatalf("bucket %d: hi %d < lo %d", i, hi, lo)
		}
		if lo >= 2*subCount && (hi-lo+1)*subCount > lo {
			t.Fatalf("bucket %d [%d, %d] is wider than 1/%d of %d", i, lo, hi, subCount, lo)
		}
		for _, v := range []uint64{lo, hi, lo + (hi-lo)/2} {
			if got := bucketOf(v); got != i {
				t.Fatalf("bucketOf(%d) = %d, want %d", v, got, i)
			}
		}
		prevHi = hi
	}
	if prevHi != ^uint64(0) {
		t.Fatalf("the last bucket ends at %d, not at the largest uint64", prevHi)
	}
}

func TestHistogramSmallValuesAreExact(t *testing.T) {
	var h Histogram
	for v := 1; v <= 100; v++ {
		h.Record(time.Duration(v))
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.01, 1}, {0.5, 50}, {0.9, 90}, {0.99, 99}, {0.999, 100}, {1, 100}} {
		if got := h.Quantile(tc.q); got != tc.want {
			t.Errorf("Quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if h.Min() != 1 || h.Max() != 100 || h.Count() != 100 || h.Mean() != 50 {
		t.Errorf("min %v max %v count %d mean %v, want 1 100 100 50", h.Min(), h.Max(), h.Count(), h.Mean())
	}
}

// TestHistogramQuantilesMatchSortedSamples checks the nearest-rank
// percentiles against the exact ones of the same samples: never below,
// and above by less than one bucket's width.
func TestHistogramQuantilesMatchSortedSamples(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	dists := map[string]func() time.Duration{
		"uniform 1µs-10ms": func() time.Duration { return time.Microsecond + time.Duration(rng.Int64N(int64(10*time.Millisecond))) },
		"exponential 2ms":  func() time.Duration { return time.Duration(rng.ExpFloat64() * float64(2*time.Millisecond)) },
		"bimodal": func() time.Duration {
			return []time.Duration{300 * time.Microsecond, 40 * time.Millisecond}[rng.IntN(50)/49] + time.Duration(rng.Int64N(int64(time.Microsecond)))
		},
	}
	for name, draw := range dists {
		t.Run(name, func(t *testing.T) {
			var h Histogram
			samples := make([]time.Duration, 100_000)
			for i := range samples {
				samples[i] = draw()
				h.Record(samples[i])
			}
			slices.Sort(samples)
			for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
				rank := int(float64(len(samples))*q+0.999999) - 1
				exact := samples[rank]
				got := h.Quantile(q)
				if got < exact || float64(got-exact) > float64(exact)/subCount+1 {
					t.Errorf("Quantile(%v) = %v, exact %v: off by more than 1/%d", q, got, exact, subCount)
				}
			}
			if h.Max() != samples[len(samples)-1] || h.Min() != samples[0] {
				t.Errorf("min/max %v/%v, want %v/%v", h.Min(), h.Max(), samples[0], samples[len(samples)-1])
			}
		})
	}
}

func TestHistogramEmptyMergeReset(t *testing.T) {
	var a, b, empty Histogram
	if a.Quantile(0.99) != 0 || a.Max() != 0 || a.Min() != 0 || a.Mean() != 0 {
		t.Fatal("an empty histogram must answer 0")
	}
	for v := 1; v <= 50; v++ {
		a.Record(time.Duration(v) * time.Millisecond)
		b.Record(time.Duration(50+v) * time.Millisecond)
	}
	a.Merge(&b)
	a.Merge(&empty)
	if a.Count() != 100 || a.Min() != time.Millisecond || a.Max() != 100*time.Millisecond {
		t.Fatalf("merged: count %d min %v max %v", a.Count(), a.Min(), a.Max())
	}
	if got := a.Quantile(0.5); got < 50*time.Millisecond || got > 50*time.Millisecond+50*time.Millisecond/subCount {
		t.Fatalf("merged p50 = %v, want about 50ms", got)
	}
	a.Record(-time.Second) // a clock step counts as 0
	if a.Min() != 0 {
		t.Fatalf("min after a negative sample = %v, want 0", a.Min())
	}
	a.Reset()
	if a.Count() != 0 || a.Quantile(0.5) != 0 || a.Max() != 0 {
		t.Fatal("Reset left samples behind")
	}
}

func TestHistogramConcurrentRecord(t *testing.T) {
	var h Histogram
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				h.Record(time.Duration(g*1000+i+1) * time.Microsecond)
			}
		})
	}
	wg.Wait()
	if h.Count() != 8000 || h.Min() != time.Microsecond || h.Max() != 8000*time.Microsecond {
		t.Fatalf("count %d min %v max %v", h.Count(), h.Min(), h.Max())
	}
}

func TestSeqSet(t *testing.T) {
	var s seqSet
	order := rand.New(rand.NewPCG(3, 4)).Perm(1000)
	for _, x := range order {
		if !s.add(uint64(x)) {
			t.Fatalf("add(%d) said duplicate the first time", x)
		}
		if s.add(uint64(x)) {
			t.Fatalf("add(%d) said new the second time", x)
		}
	}
	if s.len() != 1000 || s.base != 960 || len(s.words) != 1 {
		t.Fatalf("len %d base %d words %d: full words were not dropped", s.len(), s.base, len(s.words))
	}
	for x := range uint64(1000) {
		if !s.has(x) {
			t.Fatalf("has(%d) = false", x)
		}
	}
	if s.has(1000) {
		t.Fatal("has(1000) = true")
	}

	var want, got seqSet
	for x := range uint64(500) {
		want.add(x)
		if x%7 != 0 { // 0, 7, ..., 497 are missing: 72 of them
			got.add(x)
		}
	}
	got.add(900) // extra members do not count
	if n := got.missing(&want); n != 72 {
		t.Fatalf("missing = %d, want 72", n)
	}
	if n := want.missing(&want); n != 0 {
		t.Fatalf("a set misses %d of itself", n)
	}
	var empty seqSet
	if n := empty.missing(&want); n != 500 {
		t.Fatalf("empty set misses %d of 500", n)
	}
}

func TestBodyTimestamp(t *testing.T) {
	ts := time.Now().UnixNano()
	b := body(nil, ts, 64)
	if len(b) != 64 {
		t.Fatalf("body is %d bytes, want 64", len(b))
	}
	got, ok := bodyTime(string(b))
	if !ok || got != ts {
		t.Fatalf("bodyTime = %d, %v; want %d", got, ok, ts)
	}
	for _, bad := range []string{"", "hello", ":x", "12a:x", "123"} {
		if _, ok := bodyTime(bad); ok {
			t.Errorf("bodyTime(%q) parsed", bad)
		}
	}
}
