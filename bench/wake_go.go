// Wake-up: Go, two goroutines ping-ponging a byte over two os.Pipe pairs,
// the peer of wake_spindle's spindle_pipe.
//
// os.Pipe puts both ends in non-blocking mode and registers them with the
// runtime's netpoller (epoll on Linux), so a Read that finds the pipe empty
// parks the goroutine, and the scheduler readies it when epoll reports the
// fd: the same write -> epoll -> scheduler -> goroutine path as spindle's.
// GOMAXPROCS=1 and the process pinned to one CPU, the single-threaded
// setting spindle runs in. The unit is one round trip (two wakes).
package main

import (
	"os"
	"runtime"
	"time"
)

func must(err error) {
	if err != nil {
		panic(err)
	}
}

func pipeRound(n uint64) float64 {
	aIn, bOut, err := os.Pipe()
	must(err)
	bIn, aOut, err := os.Pipe()
	must(err)
	done := make(chan struct{})
	go func() {
		buf := make([]byte, 1)
		for i := uint64(0); i < n; i++ {
			_, err := bIn.Read(buf)
			must(err)
			_, err = bOut.Write(buf)
			must(err)
		}
		close(done)
	}()
	buf := []byte{'x'}
	start := time.Now()
	for i := uint64(0); i < n; i++ {
		_, err := aOut.Write(buf)
		must(err)
		_, err = aIn.Read(buf)
		must(err)
	}
	took := since(start)
	<-done
	for _, f := range []*os.File{aIn, bOut, bIn, aOut} {
		must(f.Close())
	}
	return took
}

func main() {
	r := newRunner("wake")
	if r.wants("go_pipe") {
		runtime.GOMAXPROCS(1)
		pin := pinProcess(primaryCPU())
		r.timeCase("go_pipe", "ns/roundtrip", 1, pin+" GOMAXPROCS=1 wakes_per_op=2", pipeRound)
	}
	os.Stdout.Sync()
}
