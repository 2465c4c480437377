// Switch: Go, two goroutines calling runtime.Gosched() with GOMAXPROCS=1.
//
// With one P and only these two goroutines runnable (main waits on a
// WaitGroup), each Gosched puts the caller on the run queue and resumes the
// other. One switch is one Gosched. The process is pinned to one CPU.
package main

import (
	"os"
	"runtime"
	"sync"
	"time"
)

func main() {
	r := newRunner("switch")
	if r.wants("go_gosched") {
		runtime.GOMAXPROCS(1)
		pin := pinProcess(primaryCPU())
		r.timeCase("go_gosched", "ns/switch", 2, pin+" GOMAXPROCS=1", func(n uint64) float64 {
			var wg sync.WaitGroup
			var start, stop time.Time
			body := func() {
				defer wg.Done()
				// One P: the goroutines never run at once, so these plain
				// writes are ordered by the scheduler hand-offs and wg.Wait.
				if start.IsZero() {
					start = time.Now()
				}
				for i := uint64(0); i < n/2; i++ {
					runtime.Gosched()
				}
				stop = time.Now()
			}
			wg.Add(2)
			go body()
			go body()
			wg.Wait()
			return float64(stop.Sub(start).Nanoseconds())
		})
	}
	os.Stdout.Sync()
}
