// Pooled, 64-byte-aligned byte buffers.
//
// Why: a fresh multi-MiB allocation is served by mmap and every page faults on first touch, which
// halves the speed of a codec that writes at several GB/s. Released buffers go back to a bounded
// free list (at most kMaxCached buffers and kMaxCachedBytes in total) and are handed out again
// for requests of at most their capacity and at least half of it, so their pages stay mapped.
// Thread-safe. A Buffer's size() may be shrunk below its capacity (compress writes less than its
// bound).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace ringpress {

class Buffer {
 public:
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  std::uint8_t* data() noexcept { return data_; }
  const std::uint8_t* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return capacity_; }
  void resize(std::size_t n);  // n <= capacity()

  static std::shared_ptr<Buffer> acquire(std::size_t size);

 private:
  Buffer(std::uint8_t* data, std::size_t capacity, std::size_t size)
      : data_(data), capacity_(capacity), size_(size) {}
  std::uint8_t* data_;
  std::size_t capacity_;
  std::size_t size_;
};

struct BufferPoolStats {
  std::size_t cached_buffers;
  std::size_t cached_bytes;
  std::size_t hits;
  std::size_t misses;
};
BufferPoolStats buffer_pool_stats();
void buffer_pool_clear();

}  // namespace ringpress
