// spindle::net: sockets, pipes and buffered streams driven from fibers.
//
//   address.hpp  SocketAddress (IPv4, IPv6, Unix paths)
//   dns.hpp      resolve(host, service)
//   socket.hpp   the errors (UnexpectedEof, LimitExceeded) and the stream
//                surface TcpStream and UnixStream share
//   tcp.hpp      TcpStream, TcpListener
//   unix.hpp     UnixStream, UnixListener
//   udp.hpp      UdpSocket
//   pipe.hpp     Pipe, PipeReader, PipeWriter
//   stream.hpp   StreamReader, StreamWriter (buffered, over any of them)
#pragma once

#include <spindle/net/address.hpp>
#include <spindle/net/dns.hpp>
#include <spindle/net/pipe.hpp>
#include <spindle/net/socket.hpp>
#include <spindle/net/stream.hpp>
#include <spindle/net/tcp.hpp>
#include <spindle/net/udp.hpp>
#include <spindle/net/unix.hpp>
