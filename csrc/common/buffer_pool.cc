// Buffer pool (see ringpress/buffer_pool.h). One mutex guards the free list and the counters.
#include "ringpress/buffer_pool.h"

#include <pthread.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <vector>

#include "ringpress/error.h"

namespace ringpress {
namespace {

constexpr std::size_t kMaxCached = 8;
constexpr std::size_t kMaxCachedBytes = std::size_t(2) << 30;
constexpr std::size_t kAlign = 64;

struct Free {
  std::uint8_t* data;
  std::size_t capacity;
};

struct Pool {
  std::mutex mu;
  std::vector<Free> free;
  std::size_t cached_bytes = 0, hits = 0, misses = 0;
};

// Leaked: buffers may be released during interpreter shutdown. After fork() the child gets a
// fresh pool (the inherited mutex may have been held by a thread that does not exist there).
std::atomic<Pool*> g_pool{nullptr};

Pool& pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (!p) {
    Pool* fresh = new Pool();
    if (g_pool.compare_exchange_strong(p, fresh, std::memory_order_acq_rel))
      p = fresh;
    else
      delete fresh;
  }
  return *p;
}

const int g_atfork_registered =
    pthread_atfork(nullptr, nullptr, [] { g_pool.store(nullptr, std::memory_order_release); });

}  // namespace

std::shared_ptr<Buffer> Buffer::acquire(std::size_t size) {
  Pool& p = pool();
  {
    std::lock_guard<std::mutex> lk(p.mu);
    std::size_t best = p.free.size();
    for (std::size_t i = 0; i < p.free.size(); ++i) {
      const std::size_t cap = p.free[i].capacity;
      if (cap >= size && cap / 2 <= size && (best == p.free.size() || cap < p.free[best].capacity))
        best = i;
    }
    if (best != p.free.size()) {
      Free f = p.free[best];
      p.free.erase(p.free.begin() + std::ptrdiff_t(best));
      p.cached_bytes -= f.capacity;
      ++p.hits;
      return std::shared_ptr<Buffer>(new Buffer(f.data, f.capacity, size));
    }
    ++p.misses;
  }
  const std::size_t cap = size == 0 ? kAlign : (size + kAlign - 1) / kAlign * kAlign;
  void* mem = std::aligned_alloc(kAlign, cap);
  if (!mem) {
    RP_THROW(CodecError, "out of memory allocating a ", cap, "-byte buffer");
  }
  return std::shared_ptr<Buffer>(new Buffer(static_cast<std::uint8_t*>(mem), cap, size));
}

Buffer::~Buffer() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lk(p.mu);
  if (capacity_ <= kMaxCachedBytes) {
    // Make room by dropping the oldest entries.
    while (!p.free.empty() &&
           (p.free.size() >= kMaxCached || p.cached_bytes + capacity_ > kMaxCachedBytes)) {
      p.cached_bytes -= p.free.front().capacity;
      std::free(p.free.front().data);
      p.free.erase(p.free.begin());
    }
    p.free.push_back({data_, capacity_});
    p.cached_bytes += capacity_;
  } else {
    std::free(data_);
  }
}

void Buffer::resize(std::size_t n) {
  RP_ENFORCE_LE(n, capacity_, InternalError, "Buffer::resize beyond capacity");
  size_ = n;
}

BufferPoolStats buffer_pool_stats() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lk(p.mu);
  return {p.free.size(), p.cached_bytes, p.hits, p.misses};
}

void buffer_pool_clear() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lk(p.mu);
  for (Free& f : p.free) std::free(f.data);
  p.free.clear();
  p.cached_bytes = 0;
}

}  // namespace ringpress
