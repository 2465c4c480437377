// bench.go — the Go side of bench/bench.hpp: same flags, same output.
//
// Built together with one <scenario>_go.go file:
//
//	GO111MODULE=off go build -o switch_go bench.go switch_go.go
//
// Standard library only, so it builds offline on a clean machine.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

type options struct {
	full        bool
	list        bool
	repetitions int
	minTimeMs   float64
	iterations  uint64
	only        string
	count       int // memory benches: the child process's fiber count
}

type runner struct {
	section string
	opts    options
}

func newRunner(section string) *runner {
	r := &runner{section: section}
	flag.BoolVar(&r.opts.full, "full", false, "more repetitions, longer runs")
	flag.BoolVar(&r.opts.list, "list", false, "print the case names")
	flag.IntVar(&r.opts.repetitions, "repetitions", 0, "repetitions per case")
	flag.Float64Var(&r.opts.minTimeMs, "min-time-ms", 0, "minimum run length of one repetition")
	flag.Uint64Var(&r.opts.iterations, "iterations", 0, "fixed operation count, no calibration")
	flag.StringVar(&r.opts.only, "only", "", "run only the named case")
	flag.IntVar(&r.opts.count, "count", 0, "internal: memory child process")
	flag.Parse()
	if r.opts.repetitions == 0 {
		r.opts.repetitions = 7
		if r.opts.full {
			r.opts.repetitions = 21
		}
	}
	if r.opts.minTimeMs == 0 {
		r.opts.minTimeMs = 50
		if r.opts.full {
			r.opts.minTimeMs = 200
		}
	}
	if !r.opts.list && r.opts.count == 0 {
		// The default only: the single-threaded cases set GOMAXPROCS=1, and
		// each result's note gives the value it ran with.
		fmt.Printf("PEER\tgo\t%s\tNumCPU=%d\tdefault GOMAXPROCS=%d (per case: see its note)\n", runtime.Version(), runtime.NumCPU(), runtime.GOMAXPROCS(0))
	}
	return r
}

func (r *runner) wants(name string) bool {
	if r.opts.list {
		fmt.Printf("CASE\t%s\n", name)
		return false
	}
	return r.opts.only == "" || r.opts.only == name
}

// timeCase mirrors bench::Runner::time: body(n) performs n operations (a
// multiple of granularity) and returns the nanoseconds it measured.
func (r *runner) timeCase(name, unit string, granularity uint64, note string, body func(n uint64) float64) {
	if granularity == 0 {
		granularity = 1
	}
	round := func(n uint64) uint64 {
		n = (n + granularity - 1) / granularity * granularity
		if n < granularity {
			n = granularity
		}
		return n
	}
	var n uint64
	if r.opts.iterations != 0 {
		n = round(r.opts.iterations)
		body(n)
	} else {
		minNs := r.opts.minTimeMs * 1e6
		n = granularity
		for {
			t := body(n)
			if t >= minNs {
				break
			}
			factor := 10.0
			if t > 0 {
				factor = minNs * 1.2 / t
			}
			if factor < 2 {
				factor = 2
			}
			if factor > 10 {
				factor = 10
			}
			n = round(uint64(float64(n) * factor))
		}
		body(n)
	}
	samples := make([]float64, 0, r.opts.repetitions)
	for i := 0; i < r.opts.repetitions; i++ {
		samples = append(samples, body(n)/float64(n))
	}
	r.report(name, unit, samples, fmt.Sprintf("iters=%d %s", n, note))
}

func (r *runner) report(name, unit string, samples []float64, note string) {
	sort.Float64s(samples)
	k := len(samples)
	median := samples[k/2]
	if k%2 == 0 {
		median = (samples[k/2-1] + samples[k/2]) / 2
	}
	full := strings.TrimSpace(fmt.Sprintf("reps=%d %s", k, note))
	fmt.Printf("RESULT\t%s\t%s\t%.3f\t%.3f\t%.3f\t%s\t%s\n", r.section, name, median, samples[0], samples[k-1], unit, full)
}

func (r *runner) skipped(name, why string) {
	fmt.Printf("SKIPPED\t%s\t%s\t%s\n", r.section, name, why)
}

// cpusAtStart is the affinity mask before any pinning; the last CPU is the
// one benches pin to, as in bench.hpp.
var cpusAtStart = allowedCPUs(0)

func allowedCPUs(tid int) []int {
	var mask [16]uint64
	_, _, errno := syscall.RawSyscall(syscall.SYS_SCHED_GETAFFINITY, uintptr(tid), unsafe.Sizeof(mask), uintptr(unsafe.Pointer(&mask)))
	if errno != 0 {
		return nil
	}
	var cpus []int
	for i := 0; i < len(mask)*64; i++ {
		if mask[i/64]&(1<<(uint(i)%64)) != 0 {
			cpus = append(cpus, i)
		}
	}
	return cpus
}

func primaryCPU() int {
	if len(cpusAtStart) == 0 {
		return 0
	}
	return cpusAtStart[len(cpusAtStart)-1]
}

// pinProcess pins every thread the runtime has started so far to one CPU;
// threads created later inherit the mask from their creator, so the whole
// process stays there. Returns the note token, pin=cpuN or pin=no(why).
func pinProcess(cpu int) string {
	var mask [16]uint64
	mask[cpu/64] = 1 << (uint(cpu) % 64)
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return "pin=no(no-proc)"
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		_, _, errno := syscall.RawSyscall(syscall.SYS_SCHED_SETAFFINITY, uintptr(tid), unsafe.Sizeof(mask), uintptr(unsafe.Pointer(&mask)))
		if errno != 0 {
			return fmt.Sprintf("pin=no(%s)", errno.Error())
		}
		if got := allowedCPUs(tid); len(got) != 1 || got[0] != cpu {
			return "pin=no(mask-not-applied)"
		}
	}
	// As bench.hpp does: the mask reading back is not enough, the thread
	// running this must be on that CPU now (every thread has the mask).
	// Go's syscall package has no SYS_GETCPU on amd64 (libc reaches it
	// through the vDSO): the Linux numbers.
	sysGetcpu := map[string]uintptr{"amd64": 309, "arm64": 168}[runtime.GOARCH]
	if sysGetcpu == 0 {
		return fmt.Sprintf("pin=cpu%d(mask-only)", cpu)
	}
	var cur, node uint32
	if _, _, errno := syscall.RawSyscall(sysGetcpu, uintptr(unsafe.Pointer(&cur)), uintptr(unsafe.Pointer(&node)), 0); errno != 0 {
		return fmt.Sprintf("pin=no(getcpu: %s)", errno.Error())
	}
	if int(cur) != cpu {
		return fmt.Sprintf("pin=no(running-on-cpu%d)", cur)
	}
	return fmt.Sprintf("pin=cpu%d", cpu)
}

// unpinProcess restores the start-up mask on every thread.
func unpinProcess() {
	var mask [16]uint64
	for _, c := range cpusAtStart {
		mask[c/64] |= 1 << (uint(c) % 64)
	}
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, t := range tasks {
		if tid, err := strconv.Atoi(t.Name()); err == nil {
			syscall.RawSyscall(syscall.SYS_SCHED_SETAFFINITY, uintptr(tid), unsafe.Sizeof(mask), uintptr(unsafe.Pointer(&mask)))
		}
	}
}

// residentKiB reads the second field of /proc/self/statm.
func residentKiB() float64 {
	data, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return -1
	}
	fields := strings.Fields(string(data))
	if len(fields) < 2 {
		return -1
	}
	pages, _ := strconv.ParseFloat(fields[1], 64)
	return pages * float64(os.Getpagesize()) / 1024
}

func since(t time.Time) float64 { return float64(time.Since(t).Nanoseconds()) }
