// Memory: resident KiB per parked goroutine, at 10k, 100k and 1M.
//
// As memory_spindle: each sample is a fresh process (this binary re-run
// with -count N), which reads the resident set from /proc/self/statm,
// starts N goroutines that each sleep for an hour, waits until all have
// started and parked, reads the resident set again and prints the growth
// divided by N. Both reads follow a runtime.GC(), so garbage is not
// counted. A goroutine starts on a 2 KiB stack.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

func child(count int) {
	runtime.GC()
	before := residentKiB()
	var started int64
	for i := 0; i < count; i++ {
		go func() {
			atomic.AddInt64(&started, 1)
			time.Sleep(time.Hour)
		}()
	}
	for atomic.LoadInt64(&started) < int64(count) {
		time.Sleep(time.Millisecond)
	}
	// The last goroutines to start may not have reached their sleep yet.
	time.Sleep(50 * time.Millisecond)
	runtime.GC()
	after := residentKiB()
	fmt.Printf("%f\n", (after-before)/float64(count))
	os.Stdout.Sync()
	os.Exit(0)
}

func main() {
	r := newRunner("memory")
	if r.opts.count > 0 {
		child(r.opts.count)
	}
	counts := []struct {
		n     int
		label string
	}{{10000, "10k"}, {100000, "100k"}, {1000000, "1M"}}
	for _, c := range counts {
		name := "go_" + c.label
		if !r.wants(name) {
			continue
		}
		// As bench::Runner::memory: 3 samples at 10k and 1 above, --full 5 and 3.
		reps := 1
		switch {
		case r.opts.full && c.n <= 10000:
			reps = 5
		case r.opts.full:
			reps = 3
		case c.n <= 10000:
			reps = 3
		}
		var samples []float64
		failure := ""
		for i := 0; i < reps && failure == ""; i++ {
			out, err := exec.Command("/proc/self/exe", "-count", strconv.Itoa(c.n)).Output()
			if err != nil {
				failure = err.Error()
				break
			}
			v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
			if err != nil {
				failure = "unparsable child output"
				break
			}
			samples = append(samples, v)
		}
		if failure != "" {
			r.skipped(name, fmt.Sprintf("count=%d: %s", c.n, failure))
			continue
		}
		r.report(name, "KiB/fiber", samples, fmt.Sprintf("count=%d GOMAXPROCS=%d", c.n, runtime.GOMAXPROCS(0)))
	}
	os.Stdout.Sync()
}
