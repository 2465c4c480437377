// StreamReader and StreamWriter: the buffering, over a type-erased stream.
#include <spindle/net/stream.hpp>

#include <fmt/core.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "runtime/scheduler.hpp"

namespace spindle::net {

namespace {
constexpr std::size_t kReadChunk = 16 * 1024;
}  // namespace

bool StreamReader::fill(std::size_t want) {
  if (eof_) return false;
  // Drop the consumed prefix before growing, so the buffer stays near the
  // limit however long the stream runs.
  if (pos_ > 0) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  std::size_t old = buf_.size();
  buf_.resize(old + want);
  std::size_t n = 0;
  try {
    n = read_(stream_, std::as_writable_bytes(std::span(buf_.data() + old, want)));
  } catch (...) {
    buf_.resize(old);
    throw;
  }
  buf_.resize(old + n);
  if (n == 0) eof_ = true;
  return n > 0;
}

std::string StreamReader::take(std::size_t n) {
  std::string out = buf_.substr(pos_, n);
  pos_ += n;
  if (pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  }
  return out;
}

std::size_t StreamReader::find_delimited(std::string_view delim, std::size_t max) {
  if (delim.empty()) throw std::invalid_argument("spindle::net::StreamReader: empty delimiter");
  detail::enter_blocking("spindle::net::StreamReader::read_until");
  std::size_t searched = 0;
  for (;;) {
    std::string_view have(buf_.data() + pos_, buffered());
    std::size_t at = have.find(delim, searched);
    if (at != std::string_view::npos && at + delim.size() <= max) return at + delim.size();
    if (at != std::string_view::npos || have.size() >= max) {
      spindle::detail::raise_off_small_stack(
          [&] { throw LimitExceeded(fmt::format("StreamReader: no {:?} within {} bytes", delim, max), max); });
    }
    searched = have.size() >= delim.size() ? have.size() - delim.size() + 1 : 0;
    // Never ask for more than one byte past the limit (the byte that proves
    // it exceeded); written to stay clear of overflow for max = SIZE_MAX.
    std::size_t room = max - have.size();
    if (!fill(room >= kReadChunk ? kReadChunk : room + 1)) return std::string_view::npos;
  }
}

std::string StreamReader::read_line(std::size_t max) {
  std::size_t n = find_delimited("\n", max);
  return take(n == std::string_view::npos ? buffered() : n);
}

std::string StreamReader::read_until(std::string_view delim, std::size_t max) {
  std::size_t n = find_delimited(delim, max);
  if (n == std::string_view::npos) {
    spindle::detail::raise_off_small_stack([&] {
      throw UnexpectedEof(fmt::format("StreamReader::read_until: EOF after {} bytes without {:?}", buffered(), delim),
                          buffered(), buffered() + delim.size());
    });
  }
  return take(n);
}

std::string StreamReader::read_exactly(std::size_t n) {
  detail::enter_blocking("spindle::net::StreamReader::read_exactly");
  while (buffered() < n) {
    if (!fill(std::max(n - buffered(), kReadChunk))) {
      spindle::detail::raise_off_small_stack([&] {
        throw UnexpectedEof(fmt::format("StreamReader::read_exactly: EOF after {} of {} bytes", buffered(), n),
                            buffered(), n);
      });
    }
  }
  return take(n);
}

std::size_t StreamReader::read_some(std::span<std::byte> buf) {
  detail::enter_blocking("spindle::net::StreamReader::read_some");
  if (buf.empty()) return 0;
  if (buffered() == 0) {
    if (eof_) return 0;
    // Nothing buffered: read straight into the caller's buffer.
    std::size_t n = read_(stream_, buf);
    if (n == 0) eof_ = true;
    return n;
  }
  std::size_t n = std::min(buf.size(), buffered());
  std::memcpy(buf.data(), buf_.data() + pos_, n);
  pos_ += n;
  if (pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  }
  return n;
}

void StreamWriter::write(std::span<const std::byte> data) {
  if (closed_) throw std::logic_error("spindle::net::StreamWriter::write after close");
  if (buf_.size() + data.size() > limit_) {
    drain();
    if (data.size() >= limit_) {
      try {
        write_(stream_, data);
      } catch (...) {
        buf_.clear();
        throw;
      }
      return;
    }
  }
  buf_.append(reinterpret_cast<const char*>(data.data()), data.size());
}

void StreamWriter::drain() {
  if (buf_.empty()) {
    // Still a suspension point, like every call that could park.
    detail::enter_blocking("spindle::net::StreamWriter::drain");
    return;
  }
  // The buffer is cleared whatever happens: after a failed or interrupted
  // write_all the stream position is unknown, and re-sending could
  // duplicate bytes the peer already has.
  std::string pending = std::move(buf_);
  buf_.clear();
  write_(stream_, std::as_bytes(std::span(pending)));
  // Reuse the allocation for the next round of writes.
  pending.clear();
  buf_ = std::move(pending);
}

void StreamWriter::close() {
  if (closed_) return;
  drain();
  closed_ = true;
  close_(stream_);
}

}  // namespace spindle::net
