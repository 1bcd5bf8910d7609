// The store's request parser (contract in store_protocol.h; protocol in store_tcp.cc).
#include "store_protocol.h"

#include <algorithm>
#include <cstring>
#include <utility>

namespace ringpress::store_protocol {

namespace {
// Magic, auth byte, reserved bytes of either hello.
std::string check_hello_head(const std::uint8_t* h, std::size_t n) {
  const std::size_t m = std::min(n, sizeof(kMagic));
  if (std::memcmp(h, kMagic, m) != 0)
    return "bad handshake (not a ringpress store peer, or protocol version mismatch)";
  if (n > 8 && h[8] != kAuthNone && h[8] != kAuthKey)
    return "bad handshake (auth mode " + std::to_string(h[8]) + ")";
  for (std::size_t i = 9; i < std::min<std::size_t>(n, 16); ++i)
    if (h[i] != 0) return "bad handshake (reserved bytes not zero)";
  return std::string();
}
}  // namespace

std::string check_client_hello(const std::uint8_t* h, std::size_t n) {
  return check_hello_head(h, std::min(n, kClientHello));
}

std::string check_server_hello(const std::uint8_t* h, std::uint8_t* auth) {
  std::string why = check_hello_head(h, kServerHello);
  *auth = why.empty() ? h[8] : kAuthNone;
  return why;
}

void put_u32(std::uint8_t* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
void put_u64(std::uint8_t* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
std::uint32_t get_u32(const std::uint8_t* p) {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
std::uint64_t get_u64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void RequestParser::fail(std::string why) {
  state_ = State::kError;
  error_ = std::move(why);
}

// Copies up to want - have_ bytes into head_; returns how many.
std::size_t RequestParser::fill(const std::uint8_t* data, std::size_t n, std::size_t want) {
  const std::size_t k = std::min(n, want - have_);
  std::memcpy(head_ + have_, data, k);
  have_ += k;
  return k;
}

std::size_t RequestParser::feed(const std::uint8_t* data, std::size_t n) {
  std::size_t pos = 0;
  while (pos < n) {
    switch (state_) {
      case State::kDone:
      case State::kError:
      case State::kDecide: return pos;
      case State::kIdle: {
        const std::uint8_t cmd = data[pos];
        if (cmd != kCmdSet && cmd != kCmdGet && cmd != kCmdAdd && cmd != kCmdDelete) {
          fail("unknown command " + std::to_string(cmd));
          return pos;
        }
        req_ = Request();
        req_.cmd = cmd;
        head_[0] = cmd;
        have_ = 1;
        ++pos;
        state_ = State::kHeader;
        break;
      }
      case State::kHeader: {
        pos += fill(data + pos, n - pos, kRequestHeader);
        if (have_ < kRequestHeader) break;
        key_length_ = get_u32(head_ + 1);
        if (key_length_ > kMaxKey) {
          fail("key length " + std::to_string(key_length_) + " exceeds " + std::to_string(kMaxKey));
          return pos;
        }
        have_ = 0;
        state_ = key_length_ > 0 ? State::kKey : State::kLength;
        break;
      }
      case State::kKey: {
        const std::size_t k = std::min<std::size_t>(n - pos, key_length_ - req_.key.size());
        req_.key.append(reinterpret_cast<const char*>(data + pos), k);
        pos += k;
        if (req_.key.size() == key_length_) state_ = State::kLength;
        break;
      }
      case State::kLength: {
        pos += fill(data + pos, n - pos, 8);
        if (have_ < 8) break;
        have_ = 0;
        const std::uint64_t vlen = get_u64(head_);
        const std::uint8_t cmd = req_.cmd;
        const bool ok = cmd == kCmdSet      ? vlen <= kMaxValue
                        : cmd == kCmdDelete ? vlen == 0
                                            : vlen == 8;
        if (!ok) {
          fail("value length " + std::to_string(vlen) + " invalid for command " +
               std::to_string(cmd) +
               (cmd == kCmdSet      ? " (limit " + std::to_string(kMaxValue) + ")"
                : cmd == kCmdDelete ? std::string(" (must be 0)")
                                    : std::string(" (must be 8)")));
          return pos;
        }
        req_.value_length = vlen;
        remaining_ = vlen;
        if (cmd == kCmdSet) {
          state_ = State::kDecide;
          return pos;
        }
        state_ = vlen > 0 ? State::kValue : State::kDone;
        break;
      }
      case State::kValue: {
        const std::size_t k =
            static_cast<std::size_t>(std::min<std::uint64_t>(n - pos, remaining_));
        Bytes& v = req_.value;
        v.reserve(value_capacity_after(k));
        v.insert(v.end(), data + pos, data + pos + k);
        pos += k;
        remaining_ -= k;
        if (remaining_ == 0) state_ = State::kDone;
        break;
      }
      case State::kSkip: {
        const std::size_t k =
            static_cast<std::size_t>(std::min<std::uint64_t>(n - pos, remaining_));
        pos += k;
        remaining_ -= k;
        if (remaining_ == 0) state_ = State::kDone;
        break;
      }
    }
  }
  // A request whose last part is empty completes without another byte.
  if (state_ == State::kValue && remaining_ == 0) state_ = State::kDone;
  return pos;
}

std::size_t RequestParser::value_capacity_after(std::size_t k) const {
  const Bytes& v = req_.value;
  if (v.capacity() - v.size() >= k) return v.capacity();
  // Grow with what arrived: double (at least 4 KiB more), never past the claimed length.
  const std::uint64_t want = std::max<std::uint64_t>(
      {static_cast<std::uint64_t>(v.size()) + k, 2ull * v.size(), v.size() + 4096ull});
  return static_cast<std::size_t>(std::min(want, req_.value_length));
}

void RequestParser::skip_value() {
  if (state_ != State::kValue || req_.cmd != kCmdSet) return;  // GET/ADD arguments are needed
  Bytes().swap(req_.value);
  req_.discarded = true;
  state_ = State::kSkip;
}

void RequestParser::keep_value(bool keep) {
  if (state_ != State::kDecide) return;
  req_.discarded = !keep;
  state_ = remaining_ == 0 ? State::kDone : keep ? State::kValue : State::kSkip;
}

Request RequestParser::take() {
  Request r = std::move(req_);
  req_ = Request();
  state_ = State::kIdle;
  have_ = 0;
  remaining_ = 0;
  return r;
}

void RequestParser::reset() {
  req_ = Request();
  state_ = State::kIdle;
  have_ = 0;
  remaining_ = 0;
  error_.clear();
}

std::size_t RecordReader::feed(const std::uint8_t* data, std::size_t n) {
  std::size_t pos = 0;
  while (pos < n && !ready_ && error_.empty()) {
    if (buf_.size() < kRecordHeader) {
      const std::size_t k = std::min(n - pos, kRecordHeader - buf_.size());
      buf_.insert(buf_.end(), data + pos, data + pos + k);
      pos += k;
      if (buf_.size() < kRecordHeader) break;
      length_ = get_u32(buf_.data());
      if (length_ == 0 || length_ > kMaxRecord) {
        error_ = "record of " + std::to_string(length_) + " bytes (allowed 1.." +
                 std::to_string(kMaxRecord) + ")";
        return pos;
      }
      continue;
    }
    const std::size_t want = kRecordHeader + length_ + kRecordTag;
    const std::size_t k = std::min(n - pos, want - buf_.size());
    // Grows with the bytes received: doubling, at least 4 KiB, never past the record's end.
    if (buf_.capacity() < buf_.size() + k)
      buf_.reserve(std::min(want, std::max({buf_.size() + k, 2 * buf_.size(), std::size_t(4096)})));
    buf_.insert(buf_.end(), data + pos, data + pos + k);
    pos += k;
    if (buf_.size() == want) ready_ = true;
  }
  return pos;
}

void RecordReader::next() {
  if (buf_.capacity() > 4096) {
    std::vector<std::uint8_t>().swap(buf_);
  } else {
    buf_.clear();
  }
  length_ = 0;
  ready_ = false;
}

}  // namespace ringpress::store_protocol
