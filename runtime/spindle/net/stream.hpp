// Buffered reading and writing over any spindle byte stream: asyncio's
// StreamReader and StreamWriter.
//
//   auto conn = spindle::net::TcpStream::connect("127.0.0.1", 6379);
//   spindle::net::StreamReader in(conn);
//   spindle::net::StreamWriter out(conn);
//   out.write("PING\r\n");
//   out.drain();                                   // like `await writer.drain()`
//   std::string reply = in.read_until("\r\n");     // "+PONG\r\n"
//
// Both are non-owning views: they keep a reference to the stream, which must
// outlive them, and one small type-erased hook (a pointer and a function
// pointer; no templates beyond the constructor, no virtual calls), so they
// work over TcpStream, UnixStream, PipeReader / PipeWriter, or any type with
//   std::size_t read_some(std::span<std::byte>)       (0 = EOF)     reader
//   void write_all(std::span<const std::byte>)                      writer
// A reader and a writer may share one stream (a socket read and written by
// the same or by different fibers).
//
// The limit (asyncio's, 64 KiB by default) bounds what read_line and
// read_until buffer while looking for the delimiter: past it they throw
// LimitExceeded and consume nothing. It also sets the writer's buffer size.
//
// Timeouts and cancellation: every call that can park honours them. A read
// that ends early keeps everything it already buffered (a retry sees it; a
// read_exactly does not consume a partial result). A drain (or a write that
// flushes) that ends early may have written part of the buffer: the buffer
// is discarded and the stream is at an unknown position, so close it.
#pragma once

#include <concepts>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include <spindle/net/socket.hpp>

namespace spindle::net {

template <typename S>
concept ByteReadStream = requires(S& s, std::span<std::byte> buf) {
  { s.read_some(buf) } -> std::convertible_to<std::size_t>;
};

template <typename S>
concept ByteWriteStream = requires(S& s, std::span<const std::byte> data) { s.write_all(data); };

class StreamReader {
 public:
  template <ByteReadStream S>
  explicit StreamReader(S& stream, std::size_t limit = kDefaultLimit)
      : stream_(&stream),
        read_([](void* s, std::span<std::byte> buf) -> std::size_t {
          return static_cast<S*>(s)->read_some(buf);
        }),
        limit_(limit) {}

  StreamReader(const StreamReader&) = delete;
  StreamReader& operator=(const StreamReader&) = delete;
  StreamReader(StreamReader&&) noexcept = default;
  StreamReader& operator=(StreamReader&&) noexcept = default;

  // One line including its "\n"; at EOF the last line may lack it; "" once
  // at EOF with nothing buffered. LimitExceeded when no "\n" comes within
  // max bytes (limit() by default), the "\n" included.
  std::string read_line() { return read_line(limit_); }
  std::string read_line(std::size_t max);
  // Everything up to and including delim (non-empty). EOF before delim:
  // UnexpectedEof, and the partial bytes stay buffered (read_some gets
  // them); asyncio's readuntil. LimitExceeded as read_line.
  std::string read_until(std::string_view delim) { return read_until(delim, limit_); }
  std::string read_until(std::string_view delim, std::size_t max);
  // Exactly n bytes, or UnexpectedEof with nothing consumed.
  std::string read_exactly(std::size_t n);
  // Up to buf.size() bytes: buffered ones first, else one read of the
  // stream; 0 at EOF.
  std::size_t read_some(std::span<std::byte> buf);
  std::size_t read_some(std::span<char> buf) { return read_some(std::as_writable_bytes(buf)); }

  // True once the stream reported EOF and the buffer is empty. Never parks:
  // before any read has met EOF it is false.
  bool at_eof() const noexcept { return eof_ && buffered() == 0; }
  // Bytes read from the stream and not yet returned.
  std::size_t buffered() const noexcept { return buf_.size() - pos_; }
  std::size_t limit() const noexcept { return limit_; }

 private:
  // Reads once more from the stream into buf_; false at EOF.
  bool fill(std::size_t want);
  std::string take(std::size_t n);
  // The length up to and including delim, or npos at EOF without one.
  std::size_t find_delimited(std::string_view delim, std::size_t max);

  void* stream_;
  std::size_t (*read_)(void*, std::span<std::byte>);
  std::size_t limit_;
  std::string buf_;
  std::size_t pos_ = 0;
  bool eof_ = false;
};

class StreamWriter {
 public:
  template <ByteWriteStream S>
  explicit StreamWriter(S& stream, std::size_t limit = kDefaultLimit)
      : stream_(&stream),
        write_([](void* s, std::span<const std::byte> data) { static_cast<S*>(s)->write_all(data); }),
        close_([](void* s) {
          // A socket half-closes, so a StreamReader on it keeps reading the
          // peer's answer; anything else closes.
          if constexpr (requires(S& x) { x.shutdown_write(); })
            static_cast<S*>(s)->shutdown_write();
          else
            static_cast<S*>(s)->close();
        }),
        limit_(limit) {}

  StreamWriter(const StreamWriter&) = delete;
  StreamWriter& operator=(const StreamWriter&) = delete;
  StreamWriter(StreamWriter&&) noexcept = default;
  StreamWriter& operator=(StreamWriter&&) noexcept = default;
  // Discards unflushed bytes: a destructor must not park or throw. Call
  // drain() or close() first.
  ~StreamWriter() = default;

  // Appends to the buffer. Parks (flushing) only when the buffer would
  // grow past limit(); a write of limit() bytes or more with an empty
  // buffer goes straight to the stream.
  void write(std::span<const std::byte> data);
  void write(std::string_view data) { write(std::as_bytes(std::span(data))); }
  // Writes out everything buffered (asyncio's drain, which here means
  // "flush": fibers need no separate flow-control wait).
  void drain();
  // drain(), then shutdown_write() if the stream has it (sockets: the peer
  // reads EOF, this side can still read), else close(). Further writes
  // throw std::logic_error.
  void close();

  std::size_t buffered() const noexcept { return buf_.size(); }
  bool is_closing() const noexcept { return closed_; }

 private:
  void* stream_;
  void (*write_)(void*, std::span<const std::byte>);
  void (*close_)(void*);
  std::size_t limit_;
  std::string buf_;
  bool closed_ = false;
};

}  // namespace spindle::net
