// The record layer of a TCP link (contract in secure_channel.h).
#include "secure_channel.h"

#include <algorithm>
#include <cstring>

#include "net.h"
#include "ringpress/error.h"

namespace ringpress::transport_impl {

SecureChannel::SecureChannel(int peer, const crypto::Key& tx_key, std::uint32_t tx_dir,
                             const crypto::Key& rx_key, std::uint32_t rx_dir, bool encrypt)
    : peer_(peer), tx_(tx_key, tx_dir, encrypt), rx_(rx_key, rx_dir, encrypt) {}

long SecureChannel::write(int fd, const iovec* iov, int n, int* err) {
  // Skip what is sealed already (the caller presents the stream from its first unflushed byte).
  int i = 0;
  std::size_t ioff = 0;
  std::size_t skip = plain_pending_;
  while (i < n && skip > 0) {
    const std::size_t k = std::min(skip, iov[i].iov_len - ioff);
    skip -= k;
    ioff += k;
    if (ioff == iov[i].iov_len) {
      ++i;
      ioff = 0;
    }
  }
  while (skip == 0 && i < n && out_end_ - out_off_ < kOutBytes) {
    // One record: up to kMaxRecord bytes gathered from the iovecs.
    std::size_t len = 0;
    for (int j = i; j < n && len < kMaxRecord; ++j)
      len += (j == i ? iov[j].iov_len - ioff : iov[j].iov_len);
    len = std::min(len, kMaxRecord);
    if (len == 0) break;
    if (out_off_ > 0 && out_.size() - out_end_ < len + kOverhead) {
      std::memmove(out_.data(), out_.data() + out_off_, out_end_ - out_off_);
      for (auto& r : records_) r.first -= out_off_;
      out_end_ -= out_off_;
      out_off_ = 0;
    }
    if (out_.size() < out_end_ + len + kOverhead) out_.resize(out_end_ + len + kOverhead);
    std::uint8_t* rec = out_.data() + out_end_;
    const std::uint32_t len32 = static_cast<std::uint32_t>(len);
    std::memcpy(rec, &len32, 4);
    tx_.seal_begin(tx_seq_++, rec, 4);
    std::size_t pos = 4;
    std::size_t left = len;
    while (left > 0) {
      const std::size_t k = std::min(left, iov[i].iov_len - ioff);
      tx_.seal_update(static_cast<const std::uint8_t*>(iov[i].iov_base) + ioff, rec + pos, k);
      pos += k;
      left -= k;
      ioff += k;
      if (ioff == iov[i].iov_len) {
        ++i;
        ioff = 0;
      }
    }
    tx_.seal_finish(rec + pos);
    out_end_ += len + kOverhead;
    records_.emplace_back(out_end_, len);
    plain_pending_ += len;
  }
  return flush(fd, err);
}

long SecureChannel::flush(int fd, int* err) {
  while (out_off_ < out_end_) {
    iovec v{out_.data() + out_off_, out_end_ - out_off_};
    const long w = net::send_some(fd, &v, 1, err);
    if (w < 0) return -1;
    if (w == 0) break;
    out_off_ += static_cast<std::size_t>(w);
  }
  std::size_t done = 0;
  while (!records_.empty() && records_.front().first <= out_off_) {
    done += records_.front().second;
    records_.pop_front();
  }
  plain_pending_ -= done;
  if (out_off_ == out_end_) out_off_ = out_end_ = 0;
  return static_cast<long>(done);
}

void SecureChannel::open_record(std::uint32_t len, const std::uint8_t* rec, std::uint8_t* dst) {
  if (!rx_.open(rx_seq_, rec, 4, rec + 4, dst, len, rec + 4 + len)) {
    RP_THROW(TransportError, "record ", rx_seq_, " from peer ", peer_,
             " failed authentication: it was altered, replayed, reordered or injected on the way, "
             "or the sender does not hold this link's key");
  }
  ++rx_seq_;
}

long SecureChannel::read(int fd, void* dst, std::size_t len, int* err) {
  if (len == 0) return 0;
  auto* out = static_cast<std::uint8_t*>(dst);
  if (plain_off_ < plain_end_) {
    const std::size_t k = std::min(len, plain_end_ - plain_off_);
    std::memcpy(out, plain_.data() + plain_off_, k);
    plain_off_ += k;
    return static_cast<long>(k);
  }
  for (;;) {
    const std::size_t have = in_end_ - in_off_;
    if (have >= 4) {
      std::uint32_t rl = 0;
      std::memcpy(&rl, in_.data() + in_off_, 4);
      if (rl == 0 || rl > kMaxRecord) {
        RP_THROW(TransportError, "peer ", peer_, " sent a record of ", rl, " bytes (allowed 1..",
                 kMaxRecord, "): not a ringpress link, or corrupted");
      }
      const std::size_t need = 4 + rl + crypto::kTagBytes;
      if (have >= need) {
        const std::uint8_t* rec = in_.data() + in_off_;
        std::size_t k = rl;
        if (rl <= len) {
          open_record(rl, rec, out);
        } else {
          if (plain_.size() < rl) plain_.resize(kMaxRecord);
          open_record(rl, rec, plain_.data());
          std::memcpy(out, plain_.data(), len);
          plain_off_ = len;
          plain_end_ = rl;
          k = len;
        }
        in_off_ += need;
        if (in_off_ == in_end_) in_off_ = in_end_ = 0;
        return static_cast<long>(k);
      }
    }
    // Need more ciphertext: room for at least one whole record after what is here.
    constexpr std::size_t cap = 2 * (kMaxRecord + kOverhead);
    if (in_.size() < cap) in_.resize(cap);
    if (in_off_ > 0 && in_.size() - in_end_ < kMaxRecord + kOverhead) {
      std::memmove(in_.data(), in_.data() + in_off_, in_end_ - in_off_);
      in_end_ -= in_off_;
      in_off_ = 0;
    }
    const long r = net::recv_some(fd, in_.data() + in_end_, in_.size() - in_end_, err);
    if (r <= 0) return r;
    in_end_ += static_cast<std::size_t>(r);
  }
}

}  // namespace ringpress::transport_impl
