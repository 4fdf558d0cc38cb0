package bench

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// The histogram is log-linear, in the manner of HdrHistogram: values below
// 2·subCount each have a bucket of their own, and every power of two above
// that is split into subCount equal buckets. A bucket is therefore never
// wider than 1/subCount of the values in it, so a reported percentile is
// within 0.8% of the true sample, at a fixed 59 KiB whatever the number of
// samples.
const (
	subBits  = 7
	subCount = 1 << subBits // buckets per power of two
	// numBuckets covers every uint64: the top octave has e = 64-subBits-1.
	numBuckets = (64-subBits-1+1)*subCount + subCount
)

// Histogram counts durations (as nanoseconds) in log-linear buckets. Record
// is safe for concurrent use and never blocks; the readers (Quantile, Max,
// Count, Merge) may run at the same time as Record and then see a state
// that is a few samples behind, which is fine for progress lines and exact
// once recording has stopped.
type Histogram struct {
	counts [numBuckets]atomic.Uint64
	count  atomic.Uint64
	sum    atomic.Uint64
	min    atomic.Uint64 // stored as ^v so that the zero value means "none"
	max    atomic.Uint64
}

// bucketOf returns the index of the bucket that holds v.
func bucketOf(v uint64) int {
	if v < 2*subCount {
		return int(v)
	}
	e := bits.Len64(v) - (subBits + 1) // >= 1
	return (e+1)*subCount + int(v>>e) - subCount
}

// bucketBounds returns the smallest and the largest value of bucket i.
func bucketBounds(i int) (lo, hi uint64) {
	if i < 2*subCount {
		return uint64(i), uint64(i)
	}
	e := i/subCount - 1
	m := uint64(i%subCount + subCount)
	lo = m << e
	return lo, lo + (1 << e) - 1
}

// Record adds one sample. Negative durations (a clock step) count as 0.
func (h *Histogram) Record(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[bucketOf(v)].Add(1)
	h.count.Add(1)
	h.sum.Add(v)
	for {
		old := h.max.Load()
		if v <= old || h.max.CompareAndSwap(old, v) {
			break
		}
	}
	for {
		old := h.min.Load() // ^min, 0 when empty
		if (old != 0 && v >= ^old) || h.min.CompareAndSwap(old, ^v) {
			break
		}
	}
}

// Reset empties h. It must not race with Record.
func (h *Histogram) Reset() {
	for i := range h.counts {
		h.counts[i].Store(0)
	}
	h.count.Store(0)
	h.sum.Store(0)
	h.min.Store(0)
	h.max.Store(0)
}

// Count returns the number of samples.
func (h *Histogram) Count() uint64 { return h.count.Load() }

// Max returns the largest sample exactly, 0 when empty.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max.Load()) }

// Min returns the smallest sample exactly, 0 when empty.
func (h *Histogram) Min() time.Duration {
	if v := h.min.Load(); v != 0 {
		return time.Duration(^v)
	}
	return 0
}

// Mean returns the average sample, 0 when empty.
func (h *Histogram) Mean() time.Duration {
	n := h.count.Load()
	if n == 0 {
		return 0
	}
	return time.Duration(h.sum.Load() / n)
}

// Quantile returns the q-quantile (0 < q <= 1) by the nearest-rank method:
// the smallest sample such that at least q of all samples are no larger.
// It answers with the top of that sample's bucket, clamped to the exact
// minimum and maximum, so it never understates a latency and overstates it
// by less than 1/128. An empty histogram answers 0.
func (h *Histogram) Quantile(q float64) time.Duration {
	var total uint64
	var counts [numBuckets]uint64
	for i := range h.counts {
		counts[i] = h.counts[i].Load()
		total += counts[i]
	}
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	rank = min(max(rank, 1), total)
	var cum uint64
	for i, c := range counts {
		cum += c
		if cum >= rank {
			_, hi := bucketBounds(i)
			hi = min(hi, h.max.Load())
			return time.Duration(max(hi, uint64(h.Min())))
		}
	}
	return h.Max() // unreachable: cum reaches total
}

// Merge adds every sample of o to h. o should not be recorded into
// meanwhile.
func (h *Histogram) Merge(o *Histogram) {
	for i := range o.counts {
		if c := o.counts[i].Load(); c != 0 {
			h.counts[i].Add(c)
		}
	}
	h.count.Add(o.count.Load())
	h.sum.Add(o.sum.Load())
	if o.count.Load() == 0 {
		return
	}
	for v := o.max.Load(); ; {
		old := h.max.Load()
		if v <= old || h.max.CompareAndSwap(old, v) {
			break
		}
	}
	for v := o.min.Load(); ; { // both stored inverted: larger means smaller
		old := h.min.Load()
		if (old != 0 && v <= old) || h.min.CompareAndSwap(old, v) {
			break
		}
	}
}

// Latency is the summary of a Histogram that the report prints.
type Latency struct {
	Count uint64        `json:"count"`
	P50   time.Duration `json:"p50_ns"`
	P90   time.Duration `json:"p90_ns"`
	P99   time.Duration `json:"p99_ns"`
	P999  time.Duration `json:"p999_ns"`
	Max   time.Duration `json:"max_ns"`
	Mean  time.Duration `json:"mean_ns"`
}

// Summary returns the percentiles the report shows.
func (h *Histogram) Summary() Latency {
	return Latency{
		Count: h.Count(),
		P50:   h.Quantile(0.50),
		P90:   h.Quantile(0.90),
		P99:   h.Quantile(0.99),
		P999:  h.Quantile(0.999),
		Max:   h.Max(),
		Mean:  h.Mean(),
	}
}
