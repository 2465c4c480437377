// Spawn+join: Go, goroutines joined through a sync.WaitGroup.
//
// Batches of 1,000 goroutines: Add, go, Done, then Wait for the batch.
// Two cases: the default GOMAXPROCS (the runtime free to use every CPU, as
// Go programs run), and GOMAXPROCS=1 pinned to one CPU, the single-threaded
// setting spindle and Boost.Fiber are measured in. One operation is one
// goroutine started and waited for.
package main

import (
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

const batch = 1000

var sink uint64

func spawnBatches(n uint64) float64 {
	var wg sync.WaitGroup
	start := time.Now()
	for done := uint64(0); done < n; done += batch {
		wg.Add(batch)
		for i := 0; i < batch; i++ {
			go func() {
				atomic.AddUint64(&sink, 1)
				wg.Done()
			}()
		}
		wg.Wait()
	}
	return since(start)
}

func main() {
	r := newRunner("spawn")
	procs := runtime.GOMAXPROCS(0)
	if r.wants("go_batch") {
		r.timeCase("go_batch", "ns/fiber", batch, "pin=no(by-design) GOMAXPROCS="+strconv.Itoa(procs), spawnBatches)
	}
	if r.wants("go_batch_p1") {
		runtime.GOMAXPROCS(1)
		pin := pinProcess(primaryCPU())
		r.timeCase("go_batch_p1", "ns/fiber", batch, pin+" GOMAXPROCS=1", spawnBatches)
		unpinProcess()
		runtime.GOMAXPROCS(procs)
	}
	os.Stdout.Sync()
}
