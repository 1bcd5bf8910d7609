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
// bytes in place of the copy out); no syscalls while both sides are busy. Single copy (messages by
// reference, progress.cc): one process_vm_readv per 1 MiB (or per 256 KiB reduced) instead. Setup:
// 2 x ring bytes of shared memory per pair of local ranks, backed at once.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

namespace ringpress::shm {

// 256 bytes, one 64-byte line per side's fields (docs/wire-format.md). The single-copy fields
// sit in what was padding (zero in a segment made by an older build: no single copy then).
struct alignas(64) RingCtl {
  std::atomic<std::uint64_t> head;  // bytes ever written (producer)
  // Single copy (Link::probe_single_copy), producer-owned: its pid and the address of a probe
  // word in its memory.
  std::atomic<std::uint64_t> producer_pid;
  std::atomic<std::uint64_t> probe_addr;
  char pad0[40];
  std::atomic<std::uint64_t> tail;  // bytes ever read (consumer)
  // Consumer-owned: the by-reference messages it has finished reading, and 1 once it has read
  // the producer's probe word through the kernel.
  std::atomic<std::uint64_t> refs_done;
  std::atomic<std::uint32_t> single_copy_ok;
  char pad1[44];
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

  // Single copy. Each side publishes its pid and a probe address in the ring it writes
  // (publish_single_copy, before the peer maps or acknowledges); the reader of a ring then reads
  // the probe through process_vm_readv and, if that works (same user, ptrace allowed, no seccomp
  // filter), tells the writer so (probe_single_copy). From then on the writer may send a message
  // by reference: a descriptor in the ring, the payload read by the reader straight from the
  // writer's buffer (read_peer), released when the reader counts it done (finish_ref).
  void publish_single_copy();
  bool probe_single_copy();
  bool peer_reads_by_ref() const noexcept;   // writer: may this ring carry references?
  bool reads_by_ref() const noexcept;        // reader: did this side agree to read references?
  std::uint64_t refs_done() const noexcept;  // writer: references the reader has finished
  void finish_ref(std::uint64_t n, bool* wake_peer);
  // Reads n bytes at the writer's address addr into dst; returns bytes read or -1 (errno set).
  long read_peer(void* dst, std::uint64_t addr, std::size_t n) const;

  // Announce sleeping (returns false if there is work after all: caller must not sleep).
  bool sleep_as_reader();
  bool sleep_as_writer();
  bool sleep_as_writer_for_ref(std::uint64_t ref);  // waiting for the reader to finish `ref`
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
  long peer_pid_ = 0;  // the ring's writer, once probe_single_copy succeeded
};

}  // namespace ringpress::shm
