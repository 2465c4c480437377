// http_go: the Go peer of the HTTP benchmark. Go's net/http serving the
// response examples/http_server gives for GET / (the same body and
// Content-Type; net/http adds Date and Content-Length, as spindle's does),
// with a goroutine per connection, keep-alive and Go's defaults otherwise.
//
//	http_go [-port N]      (default 0: the kernel picks a port)
//
// Listens on 127.0.0.1 and prints "listening on 127.0.0.1:PORT" like the
// spindle server, then "go=VERSION gomaxprocs=P". GOMAXPROCS is Go's
// default: the CPUs in the affinity mask, so when bench/run.py pins the
// server to one CPU it runs with one P, as the single-threaded spindle
// server does. Stops on SIGTERM or SIGINT and exits 0. Standard library
// only, built with GO111MODULE=off (bench/meson.build).
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"
)

// The body of examples/http/routes.hpp's kHelloBody.
var hello = []byte("Hello, World!\n")

func main() {
	port := flag.Int("port", 0, "TCP port on 127.0.0.1 (0: any free port)")
	flag.Parse()

	ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		fmt.Fprintf(os.Stderr, "http_go: listen: %v\n", err)
		os.Exit(1)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write(hello)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	go func() {
		<-stop
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		close(done)
	}()

	fmt.Printf("listening on %s\n", ln.Addr().String())
	fmt.Printf("go=%s gomaxprocs=%d\n", runtime.Version(), runtime.GOMAXPROCS(0))
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		fmt.Fprintf(os.Stderr, "http_go: serve: %v\n", err)
		os.Exit(1)
	}
	<-done
}
