// spindle::net::StreamReader and StreamWriter over sockets and pipes: lines,
// delimiters, exact reads, the limit, buffering and drain, close, and what a
// Timeout leaves in the buffer.
#include <doctest/doctest.h>

#include <array>
#include <chrono>
#include <stdexcept>
#include <string>
#include <system_error>

#include <spindle/spindle.hpp>

using namespace std::chrono_literals;
using spindle::net::StreamReader;
using spindle::net::StreamWriter;
using spindle::net::UnixStream;

namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// True if `stream` delivers no byte within `d` (and puts none back).
bool nothing_arrives(UnixStream& stream, spindle::Duration d) {
  std::array<char, 1> c{};
  try {
    spindle::Timeout limit(d);
    stream.read_some(std::span(c));
  } catch (const spindle::TimeoutError&) {
    return true;
  }
  return false;
}

}  // namespace

TEST_CASE("stream: read_line returns whole lines, then the unterminated rest, then empty at EOF") {
  spindle::run([] {
    auto [a, b] = UnixStream::pair();
    StreamReader in(b);
    CHECK_FALSE(in.at_eof());
    auto writer = spindle::spawn([&a = a] {
      a.write_all("first\nsec");
      spindle::this_fiber::sleep_for(10ms);
      a.write_all("ond\n\nlast");
      a.shutdown_write();
    });
    CHECK(in.read_line() == "first\n");
    CHECK(in.read_line() == "second\n");  // assembled across two reads
    CHECK(in.read_line() == "\n");
    CHECK(in.read_line() == "last");
    CHECK(in.at_eof());
    CHECK(in.read_line().empty());
    CHECK(in.read_line().empty());
    writer.join();
  });
}

TEST_CASE("stream: read_until takes multi-byte delimiters and EOF before one is UnexpectedEof") {
  spindle::run([] {
    auto [a, b] = UnixStream::pair();
    StreamReader in(b);
    a.write_all("GET / HTTP/1.1\r\nHost: x\r\n\r\nBODY-no-delimiter");
    a.shutdown_write();
    CHECK(in.read_until("\r\n\r\n") == "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    try {
      in.read_until("\r\n");
      FAIL("no UnexpectedEof");
    } catch (const spindle::net::UnexpectedEof& e) {
      CHECK(e.bytes_read() == 17);
    }
    // The partial data stayed buffered.
    CHECK_FALSE(in.at_eof());
    CHECK(in.buffered() == 17);
    std::array<char, 64> buf{};
    CHECK(std::string(buf.data(), in.read_some(std::span(buf))) == "BODY-no-delimiter");
    CHECK(in.at_eof());
    CHECK(in.read_some(std::span(buf)) == 0);
    CHECK_THROWS_AS(in.read_until(""), std::invalid_argument);
  });
}

TEST_CASE("stream: read_exactly returns n bytes or throws UnexpectedEof consuming nothing") {
  spindle::run([] {
    auto [a, b] = UnixStream::pair();
    StreamReader in(b);
    auto writer = spindle::spawn([&a = a] {
      for (char c = 'a'; c <= 'j'; ++c) {
        a.write_all(std::string(1, c));
        spindle::this_fiber::sleep_for(2ms);
      }
      a.shutdown_write();
    });
    CHECK(in.read_exactly(4) == "abcd");
    CHECK(in.read_exactly(0).empty());
    try {
      in.read_exactly(10);
      FAIL("no UnexpectedEof");
    } catch (const spindle::net::UnexpectedEof& e) {
      CHECK(e.bytes_read() == 6);
      CHECK(e.bytes_expected() == 10);
    }
    CHECK(in.read_exactly(6) == "efghij");  // nothing was consumed
    CHECK(in.at_eof());
    writer.join();
  });
}

TEST_CASE("stream: a line longer than the limit throws LimitExceeded and stays readable") {
  spindle::run([] {
    auto [a, b] = UnixStream::pair();
    StreamReader in(b, 16);
    CHECK(in.limit() == 16);
    a.write_all("0123456789abcdefXYZ\nok\n");
    try {
      in.read_line();
      FAIL("no LimitExceeded");
    } catch (const spindle::net::LimitExceeded& e) {
      CHECK(e.limit() == 16);
      CHECK(contains(e.what(), "16 bytes"));
    }
    CHECK(in.read_line(64) == "0123456789abcdefXYZ\n");  // a larger per-call limit
    CHECK(in.read_line() == "ok\n");

    // The default limit is asyncio's 64 KiB.
    StreamReader big(a);
    CHECK(big.limit() == 64 * 1024);
    auto feeder = spindle::spawn([&b = b] { b.write_all(std::string(70 * 1024, 'x')); });
    CHECK_THROWS_AS(big.read_line(), spindle::net::LimitExceeded);
    feeder.join();
  });
}

TEST_CASE("stream: writes stay buffered until drain, and drain delivers them in order") {
  spindle::run([] {
    auto [a, b] = UnixStream::pair();
    StreamWriter out(a);
    out.write("hello ");
    out.write(std::as_bytes(std::span("world\n", 6)));
    CHECK(out.buffered() == 12);
    CHECK(nothing_arrives(b, 20ms));
    out.drain();
    CHECK(out.buffered() == 0);
    StreamReader in(b);
    CHECK(in.read_line() == "hello world\n");
  });
}

TEST_CASE("stream: the writer flushes by itself at its limit and sends big writes straight through") {
  spindle::run([] {
    auto [a, b] = UnixStream::pair();
    StreamWriter out(a, 1024);
    std::string received;
    auto reader = spindle::spawn([&b = b, &received] {
      std::array<char, 4096> buf{};
      while (std::size_t n = b.read_some(std::span(buf))) received.append(buf.data(), n);
    });
    std::string expected;
    for (int i = 0; i < 100; ++i) {
      std::string piece(37, static_cast<char>('a' + i % 26));
      out.write(piece);
      expected += piece;
      CHECK(out.buffered() <= 1024);
    }
    std::string big(300 * 1024, 'Z');  // parks while the socket buffer drains
    out.write(big);
    expected += big;
    CHECK(out.buffered() == 0);
    out.write("tail");
    expected += "tail";
    out.close();  // drains, then half-closes: the reader sees EOF
    CHECK(out.is_closing());
    reader.join();
    CHECK(received == expected);
    CHECK_THROWS_AS(out.write("late"), std::logic_error);
    out.close();  // idempotent
  });
}

TEST_CASE("stream: a reader and a writer share one socket for a request and its reply") {
  spindle::run([] {
    auto [a, b] = UnixStream::pair();
    auto server = spindle::spawn([&b = b] {
      StreamReader in(b);
      StreamWriter out(b);
      for (;;) {
        std::string line = in.read_line();
        if (line.empty()) break;
        out.write("you said: ");
        out.write(line);
        out.drain();
      }
      out.close();
    });
    StreamReader in(a);
    StreamWriter out(a);
    out.write("one\ntwo\n");
    out.close();  // shutdown_write: we can still read the replies
    CHECK(in.read_line() == "you said: one\n");
    CHECK(in.read_line() == "you said: two\n");
    CHECK(in.read_line().empty());
    CHECK(in.at_eof());
    server.join();
  });
}

TEST_CASE("stream: over a pipe, close closes the writer end and EPIPE surfaces from drain") {
  spindle::run([] {
    auto p = spindle::net::Pipe::create();
    StreamWriter out(p.writer);
    StreamReader in(p.reader);
    out.write("through a pipe\n");
    out.close();
    CHECK_FALSE(p.writer.is_open());
    CHECK(in.read_line() == "through a pipe\n");
    CHECK(in.read_line().empty());

    auto q = spindle::net::Pipe::create();
    StreamWriter doomed(q.writer);
    q.reader.close();
    doomed.write("nobody reads this");
    try {
      doomed.drain();
      FAIL("no EPIPE");
    } catch (const std::system_error& e) {
      CHECK(e.code() == std::errc::broken_pipe);
    }
    CHECK(doomed.buffered() == 0);  // the buffer is dropped: position unknown
  });
}

TEST_CASE("stream: a timed-out read_line keeps the partial line for the next call") {
  spindle::run([] {
    auto [a, b] = UnixStream::pair();
    StreamReader in(b);
    a.write_all("partial");
    auto start = spindle::now();
    {
      spindle::Timeout limit(30ms);
      CHECK_THROWS_AS(in.read_line(), spindle::TimeoutError);
    }
    CHECK(spindle::now() - start >= 30ms);
    CHECK(in.buffered() == 7);
    a.write_all(" line\n");
    CHECK(in.read_line() == "partial line\n");
    // A cancelled read keeps its buffer too.
    a.write_all("more");
    auto blocked = spindle::spawn([&in] { return in.read_line(); });
    spindle::this_fiber::sleep_for(10ms);
    blocked.cancel();
    CHECK_THROWS_AS(blocked.join(), spindle::Cancelled);
    a.write_all("!\n");
    CHECK(in.read_line() == "more!\n");
  });
}

TEST_CASE("stream: a StreamReader over a TcpStream sees bytes the stream had read ahead") {
  spindle::run([] {
    auto listener = spindle::net::TcpListener::bind(spindle::net::SocketAddress::parse("127.0.0.1", 0));
    auto client = spindle::net::TcpStream::connect(listener.local_address());
    auto [conn, peer] = listener.accept();
    conn.write_all("header\nbody line 1\nbody line 2\n");
    conn.shutdown_write();
    CHECK(client.read_line() == "header\n");  // the stream's own read-ahead holds the rest
    StreamReader in(client);
    CHECK(in.read_line() == "body line 1\n");
    CHECK(in.read_line() == "body line 2\n");
    CHECK(in.read_line().empty());
  });
}
