// echo_go: the Go peer of the echo benchmark, written the idiomatic way: a
// goroutine per connection, each reading into its own buffer and writing
// back what it read. Go's netpoller parks the goroutine on EAGAIN, which is
// the model spindle follows with fibers.
//
//	echo_go [-port N]      (default 0: the kernel picks a port)
//
// Listens on 127.0.0.1, prints "port=N impl=go go=VERSION gomaxprocs=P" on
// stdout once it accepts connections, and stops on SIGTERM or SIGINT.
// GOMAXPROCS is Go's default: the number of CPUs in the affinity mask, so a
// server pinned to one CPU by the load client runs with one P, as the
// single-threaded C and spindle servers do. TCP_NODELAY is Go's default for
// TCP connections. The read/write loop is spelled out rather than io.Copy,
// which on Linux would splice through a pipe instead of echoing bytes
// through user space like the other servers.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime"
	"syscall"
)

func serve(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 16*1024)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // io.EOF or a reset
		}
	}
}

func main() {
	port := flag.Int("port", 0, "TCP port on 127.0.0.1 (0: any free port)")
	flag.Parse()

	ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		fmt.Fprintf(os.Stderr, "echo_go: listen: %v\n", err)
		os.Exit(1)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		ln.Close()
	}()

	fmt.Printf("port=%d impl=go go=%s gomaxprocs=%d\n", ln.Addr().(*net.TCPAddr).Port,
		runtime.Version(), runtime.GOMAXPROCS(0))
	os.Stdout.Sync()

	for {
		c, err := ln.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Temporary() {
				continue // EMFILE and friends: try again
			}
			return // the listener was closed by a signal
		}
		go serve(c)
	}
}
