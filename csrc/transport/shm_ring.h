// Shared-memory link between two ranks on one host: two single-producer/single-consumer byte
// rings (one per direction) in one POSIX shared-memory segment (internal header).
//
// Contract
//   * The lower rank creates the segment (/dev/shm/ringpress-<job>-<pid>-<lo>-<hi>, O_EXCL), sends
//   its
//     name over the pair's TCP socket, the higher rank maps it and acknowledges, and the lower rank
//     unlinks it at once: from then on nothing is left in /dev/shm even if both processes are
//     killed. Only a kill between create and acknowledge (milliseconds) can leave a file behind.
//   * Each ring carries the same byte stream a TCP socket would (MsgHeader + payload), so the pair
//     logic above is shared. write_some/read_some never block; they move what fits.
//   * Sleeping: a side that finds nothing to do sets its *_sleeping flag, re-checks, then sleeps in
//     epoll on the pair's socket; the other side, after moving bytes, clears the flag with an
//     exchange and sends one doorbell byte if it was set (Dekker-style with seq_cst fences).
//   * Both sides populate the whole segment when they map it (MADV_POPULATE_WRITE): no page
//     faults on the data path, and a /dev/shm too small for it raises TransportError at setup.
// Cost: one memcpy into the ring and one out of it (consume_some: the consumer's own pass over the
// bytes in place of the copy out); no syscalls while both sides are busy. Setup:
// 2 x ring bytes of shared memory per pair of local ranks, backed at once.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

namespace ringpress::shm {

struct alignas(64) RingCtl {
  std::atomic<std::uint64_t> head;  // bytes ever written (producer)
  char pad0[56];
  std::atomic<std::uint64_t> tail;  // bytes ever read (consumer)
  char pad1[56];
  std::atomic<std::uint32_t> reader_sleeping;
  char pad2[60];
  std::atomic<std::uint32_t> writer_sleeping;
  char pad3[60];
};

class Link {
 public:
  // Creates (create=true) or opens a segment with two rings of `ring_bytes` (power of two).
  // `lower` says which ring this side writes (lower rank writes ring 0).
  Link(const std::string& name, std::size_t ring_bytes, bool create, bool lower);
  ~Link();
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;

  void unlink();  // remove the name (idempotent)
  const std::string& name() const noexcept { return name_; }

  // Producer side: copy as much of iov as fits; returns bytes written. *wake_peer is set when the
  // consumer was sleeping and must get a doorbell.
  // Both return kCorrupt (and move nothing) when the positions the peer keeps in shared memory
  // no longer make sense (more than the ring's capacity apart): a peer that scribbled on them.
  static constexpr std::size_t kCorrupt = ~std::size_t{0};
  std::size_t write_some(const iovec* iov, int iovcnt, bool* wake_peer);
  // Consumer side: copy up to len bytes; returns bytes read. *wake_peer as above (producer slept).
  std::size_t read_some(void* dst, std::size_t len, bool* wake_peer);
  // Consumer side without the copy: hands up to len readable bytes to sink where they lie in the
  // ring (two calls when they wrap around its end), then releases them to the producer; returns
  // the bytes consumed. The peer can still write to those bytes (it should not): sink must treat
  // them as untrusted numbers. If sink throws, nothing is released.
  using Sink = void (*)(void* ctx, const unsigned char* src, std::size_t n);
  std::size_t consume_some(std::size_t len, Sink sink, void* ctx, bool* wake_peer);
  std::size_t readable() const noexcept;
  std::size_t writable() const noexcept;

  // Announce sleeping (returns false if there is work after all: caller must not sleep).
  bool sleep_as_reader();
  bool sleep_as_writer();
  void wake_as_reader();
  void wake_as_writer();

 private:
  std::string name_;
  bool owner_ = false;
  bool unlinked_ = false;
  void* base_ = nullptr;
  std::size_t map_bytes_ = 0;
  std::size_t cap_ = 0;
  RingCtl* tx_ = nullptr;
  RingCtl* rx_ = nullptr;
  unsigned char* tx_data_ = nullptr;
  unsigned char* rx_data_ = nullptr;
};

}  // namespace ringpress::shm
