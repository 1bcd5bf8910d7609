// Shared-memory rings (see shm_ring.h for the contract).
#include "shm_ring.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "ringpress/error.h"

namespace ringpress::shm {

namespace {
constexpr std::size_t kCtlBytes = sizeof(RingCtl);
static_assert(sizeof(RingCtl) == 256, "the control block's layout is part of the wire format");
// What probe_single_copy expects to read in the peer's memory (every ringpress process has it).
alignas(16) const unsigned char kProbe[16] = {'r', 'i', 'n', 'g', 'p', 'r', 'e', 's',
                                              's', '-', 'c', 'm', 'a', '-', 'o', 'k'};
}  // namespace

Link::Link(const std::string& name, std::size_t ring_bytes, bool create, bool lower)
    : name_(name), owner_(create) {
  RP_ENFORCE(ring_bytes >= 4096 && (ring_bytes & (ring_bytes - 1)) == 0, UsageError,
             "shm ring size must be a power of two >= 4096, got ", ring_bytes);
  cap_ = ring_bytes;
  map_bytes_ = 2 * (kCtlBytes + cap_);
  int fd = create ? shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600)
                  : shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0600);
  RP_ENFORCE(fd >= 0, TransportError, "shm_open(", name, "): ", std::strerror(errno));
  if (create && ftruncate(fd, static_cast<off_t>(map_bytes_)) != 0) {
    int e = errno;
    ::close(fd);
    shm_unlink(name.c_str());
    RP_THROW(TransportError, "ftruncate(", name, ", ", map_bytes_, "): ", std::strerror(e),
             " (is /dev/shm large enough?)");
  }
  if (!create) {
    struct stat st {};
    if (fstat(fd, &st) != 0 || static_cast<std::size_t>(st.st_size) != map_bytes_) {
      ::close(fd);
      RP_THROW(TransportError, "shm segment ", name, " has size ", st.st_size, ", expected ",
               map_bytes_);
    }
  }
  base_ = mmap(nullptr, map_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int e = errno;
  ::close(fd);
  if (base_ == MAP_FAILED) {
    base_ = nullptr;
    if (create) shm_unlink(name.c_str());
    RP_THROW(TransportError, "mmap(", name, "): ", std::strerror(e));
  }
  // Back the whole segment with memory and page tables now (writable), instead of one page
  // fault per fresh 4 KiB the first time the ring passes over it: both sides faulted, and a
  // 4 KiB allreduce took 9 us instead of 3.6 us until the ring had wrapped once. It also turns a
  // /dev/shm too small for the segment (a container's 64 MiB default) into an error here
  // instead of a SIGBUS in the middle of a collective. Kernels before 5.14 lack it (EINVAL):
  // pages are then faulted lazily, as before.
#ifdef MADV_POPULATE_WRITE
  if (madvise(base_, map_bytes_, MADV_POPULATE_WRITE) != 0 && errno != EINVAL) {
    e = errno;
    munmap(base_, map_bytes_);
    base_ = nullptr;
    if (create) shm_unlink(name.c_str());
    RP_THROW(TransportError, "shm segment ", name, " (", map_bytes_,
             " bytes) could not be backed by memory: ", std::strerror(e),
             " (is /dev/shm full or too small? containers: --shm-size; or lower "
             "RINGPRESS_SHM_RING_BYTES, or RINGPRESS_TRANSPORT=tcp)");
  }
#endif
  auto* p = static_cast<unsigned char*>(base_);
  auto* ring0 = reinterpret_cast<RingCtl*>(p);
  auto* data0 = p + kCtlBytes;
  auto* ring1 = reinterpret_cast<RingCtl*>(p + kCtlBytes + cap_);
  auto* data1 = p + 2 * kCtlBytes + cap_;
  if (create) {
    // ftruncate zero-fills; placement-new makes the atomics' lifetime explicit.
    new (ring0) RingCtl();
    new (ring1) RingCtl();
  }
  tx_ = lower ? ring0 : ring1;
  tx_data_ = lower ? data0 : data1;
  rx_ = lower ? ring1 : ring0;
  rx_data_ = lower ? data1 : data0;
}

Link::~Link() {
  if (base_) munmap(base_, map_bytes_);
  if (owner_ && !unlinked_) shm_unlink(name_.c_str());
}

void Link::unlink() {
  if (owner_ && !unlinked_) {
    shm_unlink(name_.c_str());
    unlinked_ = true;
  }
}

// The peer moves head (rx) or tail (tx) in shared memory: never trust the difference to be within
// the ring. A corrupt one reads as "something to do", so read_some/write_some see it and report it.
std::size_t Link::readable() const noexcept {
  const std::uint64_t d =
      rx_->head.load(std::memory_order_acquire) - rx_->tail.load(std::memory_order_relaxed);
  return d > cap_ ? cap_ : static_cast<std::size_t>(d);
}

std::size_t Link::writable() const noexcept {
  const std::uint64_t d =
      tx_->head.load(std::memory_order_relaxed) - tx_->tail.load(std::memory_order_acquire);
  return d > cap_ ? cap_ : cap_ - static_cast<std::size_t>(d);
}

std::size_t Link::write_some(const iovec* iov, int iovcnt, bool* wake_peer) {
  const std::uint64_t head = tx_->head.load(std::memory_order_relaxed);
  const std::uint64_t tail = tx_->tail.load(std::memory_order_acquire);
  if (head - tail > cap_) return kCorrupt;
  std::size_t space = cap_ - static_cast<std::size_t>(head - tail);
  std::size_t written = 0;
  for (int i = 0; i < iovcnt && space > 0; ++i) {
    const auto* src = static_cast<const unsigned char*>(iov[i].iov_base);
    std::size_t n = std::min(space, iov[i].iov_len);
    std::size_t pos = static_cast<std::size_t>((head + written) & (cap_ - 1));
    std::size_t first = std::min(n, cap_ - pos);
    std::memcpy(tx_data_ + pos, src, first);
    if (n > first) std::memcpy(tx_data_, src + first, n - first);
    written += n;
    space -= n;
    if (n < iov[i].iov_len) break;
  }
  if (written > 0) {
    tx_->head.store(head + written, std::memory_order_release);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    *wake_peer = tx_->reader_sleeping.load(std::memory_order_relaxed) != 0 &&
                 tx_->reader_sleeping.exchange(0, std::memory_order_acq_rel) != 0;
  }
  return written;
}

std::size_t Link::read_some(void* dst, std::size_t len, bool* wake_peer) {
  const std::uint64_t tail = rx_->tail.load(std::memory_order_relaxed);
  const std::uint64_t head = rx_->head.load(std::memory_order_acquire);
  if (head - tail > cap_) return kCorrupt;
  std::size_t n = std::min(len, static_cast<std::size_t>(head - tail));
  if (n == 0) return 0;
  std::size_t pos = static_cast<std::size_t>(tail & (cap_ - 1));
  std::size_t first = std::min(n, cap_ - pos);
  auto* out = static_cast<unsigned char*>(dst);
  std::memcpy(out, rx_data_ + pos, first);
  if (n > first) std::memcpy(out + first, rx_data_, n - first);
  rx_->tail.store(tail + n, std::memory_order_release);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  *wake_peer = rx_->writer_sleeping.load(std::memory_order_relaxed) != 0 &&
               rx_->writer_sleeping.exchange(0, std::memory_order_acq_rel) != 0;
  return n;
}

std::size_t Link::consume_some(std::size_t len, Sink sink, void* ctx, bool* wake_peer) {
  const std::uint64_t tail = rx_->tail.load(std::memory_order_relaxed);
  const std::uint64_t head = rx_->head.load(std::memory_order_acquire);
  if (head - tail > cap_) return kCorrupt;
  std::size_t n = std::min(len, static_cast<std::size_t>(head - tail));
  if (n == 0) return 0;
  std::size_t pos = static_cast<std::size_t>(tail & (cap_ - 1));
  std::size_t first = std::min(n, cap_ - pos);
  sink(ctx, rx_data_ + pos, first);
  if (n > first) sink(ctx, rx_data_, n - first);
  rx_->tail.store(tail + n, std::memory_order_release);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  *wake_peer = rx_->writer_sleeping.load(std::memory_order_relaxed) != 0 &&
               rx_->writer_sleeping.exchange(0, std::memory_order_acq_rel) != 0;
  return n;
}

void Link::publish_single_copy() {
  tx_->producer_pid.store(static_cast<std::uint64_t>(getpid()), std::memory_order_relaxed);
  tx_->probe_addr.store(reinterpret_cast<std::uintptr_t>(kProbe), std::memory_order_release);
}

bool Link::probe_single_copy() {
  const std::uint64_t addr = rx_->probe_addr.load(std::memory_order_acquire);
  const std::uint64_t pid = rx_->producer_pid.load(std::memory_order_relaxed);
  if (addr == 0 || pid == 0 || pid > std::uint64_t(1) << 30) return false;
  peer_pid_ = static_cast<long>(pid);
  unsigned char got[sizeof kProbe] = {};
  if (read_peer(got, addr, sizeof got) != long(sizeof got) ||
      std::memcmp(got, kProbe, sizeof got) != 0) {
    peer_pid_ = 0;
    return false;
  }
  rx_->single_copy_ok.store(1, std::memory_order_release);
  return true;
}

bool Link::peer_reads_by_ref() const noexcept {
  return tx_->single_copy_ok.load(std::memory_order_acquire) != 0;
}

bool Link::reads_by_ref() const noexcept {
  return peer_pid_ != 0;
}

std::uint64_t Link::refs_done() const noexcept {
  return tx_->refs_done.load(std::memory_order_acquire);
}

void Link::finish_ref(std::uint64_t n, bool* wake_peer) {
  rx_->refs_done.store(n, std::memory_order_release);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  *wake_peer = rx_->writer_sleeping.load(std::memory_order_relaxed) != 0 &&
               rx_->writer_sleeping.exchange(0, std::memory_order_acq_rel) != 0;
}

long Link::read_peer(void* dst, std::uint64_t addr, std::size_t n) const {
  if (peer_pid_ == 0) {
    errno = EPERM;
    return -1;
  }
  iovec local{dst, n};
  iovec remote{reinterpret_cast<void*>(static_cast<std::uintptr_t>(addr)), n};
  long r;
  do {
    r = static_cast<long>(
        process_vm_readv(static_cast<pid_t>(peer_pid_), &local, 1, &remote, 1, 0));
  } while (r < 0 && errno == EINTR);
  return r;
}

bool Link::sleep_as_writer_for_ref(std::uint64_t ref) {
  tx_->writer_sleeping.store(1, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (refs_done() >= ref) {
    tx_->writer_sleeping.store(0, std::memory_order_relaxed);
    return false;
  }
  return true;
}

bool Link::sleep_as_reader() {
  rx_->reader_sleeping.store(1, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (readable() > 0) {
    rx_->reader_sleeping.store(0, std::memory_order_relaxed);
    return false;
  }
  return true;
}

bool Link::sleep_as_writer() {
  tx_->writer_sleeping.store(1, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (writable() > 0) {
    tx_->writer_sleeping.store(0, std::memory_order_relaxed);
    return false;
  }
  return true;
}

void Link::wake_as_reader() {
  rx_->reader_sleeping.store(0, std::memory_order_relaxed);
}
void Link::wake_as_writer() {
  tx_->writer_sleeping.store(0, std::memory_order_relaxed);
}

}  // namespace ringpress::shm
