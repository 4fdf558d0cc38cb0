package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
// It is 100 on every Linux architecture Go supports.
const clockTick = 100

// procSample is a reading of one process's CPU time and memory.
type procSample struct {
	at    time.Time
	cpu   time.Duration // user + system
	rss   uint64        // bytes (VmRSS)
	peak  uint64        // bytes (VmHWM)
	valid bool
}

// readProc samples /proc/<pid> (pid 0 means this process). It returns an
// invalid sample, not an error, where /proc is not available, so that a
// run on another OS still reports throughput and latency.
func readProc(pid int) procSample {
	dir := "/proc/self"
	if pid != 0 {
		dir = "/proc/" + strconv.Itoa(pid)
	}
	s := procSample{at: time.Now()}
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return s
	}
	cpu, err := parseStatCPU(stat)
	if err != nil {
		return s
	}
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return s
	}
	s.cpu = cpu
	s.rss = statusKB(status, "VmRSS:")
	s.peak = statusKB(status, "VmHWM:")
	s.valid = true
	return s
}

// readProcs samples several processes (a cluster's nodes) and sums them:
// CPU time, RSS and each one's peak. The sum is valid only if every
// process could be read.
func readProcs(pids []int) procSample {
	sum := procSample{valid: true}
	for _, pid := range pids {
		s := readProc(pid)
		sum.at = s.at
		sum.cpu += s.cpu
		sum.rss += s.rss
		sum.peak += s.peak
		sum.valid = sum.valid && s.valid
	}
	return sum
}

// parseStatCPU reads utime + stime from the contents of /proc/<pid>/stat.
// The command name (field 2) is in parentheses and may hold spaces, so the
// fields are counted from the last ')'.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	// After ')': state is field 3, so utime (14) and stime (15) are f[11], f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed stat: %d fields", len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("malformed stat times")
	}
	return time.Duration(ut+st) * time.Second / clockTick, nil
}

// statusKB returns the value of a "Key:   123 kB" line of
// /proc/<pid>/status in bytes, 0 if absent.
func statusKB(status []byte, key string) uint64 {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, key) {
			continue
		}
		f := strings.Fields(line[len(key):])
		if len(f) == 0 {
			return 0
		}
		kb, _ := strconv.ParseUint(f[0], 10, 64)
		return kb << 10
	}
	return 0
}

// Resources is what a server process used during a measurement.
type Resources struct {
	// Scope says whose CPU and memory these are: "server process", or
	// "whole process (server + load generator)" for an in-process server.
	Scope string `json:"scope"`
	// CPU is user+system CPU time used during the measurement.
	CPU time.Duration `json:"cpu_ns"`
	// CPUCores is CPU divided by wall time: 1.0 is one core kept busy.
	CPUCores float64 `json:"cpu_cores"`
	// RSSStart and RSSEnd are resident memory at the two ends, RSSPeak the
	// process's high-water mark at the end.
	RSSStart uint64 `json:"rss_start_bytes"`
	RSSEnd   uint64 `json:"rss_end_bytes"`
	RSSPeak  uint64 `json:"rss_peak_bytes"`
}

func resources(scope string, a, b procSample) *Resources {
	if !a.valid || !b.valid {
		return nil
	}
	r := &Resources{Scope: scope, CPU: b.cpu - a.cpu, RSSStart: a.rss, RSSEnd: b.rss, RSSPeak: b.peak}
	if wall := b.at.Sub(a.at); wall > 0 {
		r.CPUCores = float64(r.CPU) / float64(wall)
	}
	return r
}
