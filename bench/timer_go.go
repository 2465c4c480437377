// Timers: Go, the peer of bench/timer_spindle.cpp and timer_asio.cpp, with
// GOMAXPROCS=1 and the process pinned to one CPU (the single-threaded
// setting spindle and Asio run in).
//
//	go_add_cancel_N  time.AfterFunc(1 h + a random part of a second, f) N
//	                 times, then Stop() on each in a random order: the
//	                 deadlines and the cancel order of the C++ peers. N is 1M
//	                 with --full and 100k in short mode. ns per add+cancel.
//	                 Go's Stop only marks the timer deleted; the P's timer
//	                 heap drops deleted entries later, in bulk or when they
//	                 reach its top, so part of the cancel lands in the
//	                 following batches, still inside the timed runs.
//	go_expire_10k    10,000 goroutines sleeping in a loop (time.Sleep), with
//	                 periods staggered from 1 to 100 us as for
//	                 spindle_expire_10k: saturated, so the cost per
//	                 expiration (the timer firing, the goroutine readied and
//	                 run, its next Sleep). The goroutines start once per
//	                 case and sleep in a loop; a timed run counts n
//	                 expirations of that steady state.
package main

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

const sleepers = 10000

// xorshift64*: the same sequence as in the C++ peers.
type rng struct{ s uint64 }

func newRng() *rng { return &rng{s: 0x9E3779B97F4A7C15} }

func (r *rng) next() uint64 {
	r.s ^= r.s >> 12
	r.s ^= r.s << 25
	r.s ^= r.s >> 27
	return r.s * 0x2545F4914F6CDD1D
}

type batch struct {
	offset      []time.Duration
	cancelOrder []uint32
}

func makeBatch(size int) batch {
	r := newRng()
	b := batch{offset: make([]time.Duration, size), cancelOrder: make([]uint32, size)}
	for i := range b.offset {
		b.offset[i] = time.Duration(r.next() % 1000000000)
	}
	for i := range b.cancelOrder {
		b.cancelOrder[i] = uint32(i)
	}
	for i := size - 1; i > 0; i-- {
		j := r.next() % uint64(i+1)
		b.cancelOrder[i], b.cancelOrder[j] = b.cancelOrder[j], b.cancelOrder[i]
	}
	return b
}

func sleeperPeriod(i uint64) time.Duration {
	return time.Duration(1000 + (i*2654435761)%99000)
}

func addCancelBatches(b batch, n uint64) float64 {
	timers := make([]*time.Timer, len(b.offset))
	fired := func() { panic("a timer an hour away fired") }
	start := time.Now()
	for done := uint64(0); done < n; done += uint64(len(b.offset)) {
		for i, d := range b.offset {
			timers[i] = time.AfterFunc(time.Hour+d, fired)
		}
		for _, i := range b.cancelOrder {
			if !timers[i].Stop() {
				panic("Stop found the timer already stopped or fired")
			}
		}
	}
	return since(start)
}

// expireLoad: sleepers goroutines sleeping in a loop for as long as the
// case runs, so that each timed run sees the steady state (as in
// timer_spindle.cpp). A run sets the count and waits for the goroutine
// whose expiration takes it to zero.
type expireLoad struct {
	left int64
	quit int32
	stop time.Time
	done chan struct{}
	wg   sync.WaitGroup
}

func startExpireLoad() *expireLoad {
	l := &expireLoad{done: make(chan struct{}, 1)}
	l.wg.Add(sleepers)
	for i := uint64(0); i < sleepers; i++ {
		period := sleeperPeriod(i)
		go func() {
			defer l.wg.Done()
			for atomic.LoadInt32(&l.quit) == 0 {
				time.Sleep(period)
				// Exactly one goroutine takes the count to zero.
				if atomic.LoadInt64(&l.left) > 0 && atomic.AddInt64(&l.left, -1) == 0 {
					l.stop = time.Now()
					l.done <- struct{}{}
				}
			}
		}()
	}
	return l
}

func (l *expireLoad) run(n uint64) float64 {
	start := time.Now()
	atomic.StoreInt64(&l.left, int64(n))
	<-l.done
	return float64(l.stop.Sub(start).Nanoseconds())
}

func (l *expireLoad) close() {
	atomic.StoreInt32(&l.quit, 1)
	l.wg.Wait()
}

func main() {
	r := newRunner("timer")
	size := 100000
	if r.opts.full {
		size = 1000000
	}
	label := fmt.Sprintf("%dk", size/1000)
	if size%1000000 == 0 {
		label = fmt.Sprintf("%dM", size/1000000)
	}
	addCancel := "go_add_cancel_" + label
	wantAddCancel := r.wants(addCancel)
	wantExpire := r.wants("go_expire_10k")
	if wantAddCancel || wantExpire {
		runtime.GOMAXPROCS(1)
		pin := pinProcess(primaryCPU())
		if wantAddCancel {
			b := makeBatch(size)
			r.timeCase(addCancel, "ns/timer", uint64(size), fmt.Sprintf("%s GOMAXPROCS=1 pending=%d", pin, size),
				func(n uint64) float64 { return addCancelBatches(b, n) })
		}
		if wantExpire {
			load := startExpireLoad()
			r.timeCase("go_expire_10k", "ns/expiry", 1, pin+" GOMAXPROCS=1 goroutines=10000 period=1-100us", load.run)
			load.close()
		}
	}
	os.Stdout.Sync()
}
