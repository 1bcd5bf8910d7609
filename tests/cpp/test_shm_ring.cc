// Shared-memory ring (csrc/transport/shm_ring.h): bytes flow in both directions, wrap around the
// ring, and positions that a peer scribbled over are reported instead of driving a memcpy.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "../../csrc/transport/shm_ring.h"

namespace shm = ringpress::shm;

namespace {

std::string segment_name(const char* what) {
  return "/ringpress-test-" + std::string(what) + "-" + std::to_string(getpid());
}

std::size_t write_all(shm::Link& l, const std::vector<unsigned char>& v) {
  iovec iov{const_cast<unsigned char*>(v.data()), v.size()};
  bool wake = false;
  return l.write_some(&iov, 1, &wake);
}

}  // namespace

TEST(ShmRing, BytesFlowBothWaysAndWrapAround) {
  const std::string name = segment_name("flow");
  shm::Link lo(name, 4096, true, true);
  shm::Link hi(name, 4096, false, false);
  lo.unlink();
  std::vector<unsigned char> out(4096), in(3000);
  for (int round = 0; round < 5; ++round) {  // 15000 bytes through a 4096-byte ring
    for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<unsigned char>(i * 7 + round);
    ASSERT_EQ(write_all(lo, in), in.size());
    bool wake = false;
    ASSERT_EQ(hi.readable(), in.size());
    ASSERT_EQ(hi.read_some(out.data(), out.size(), &wake), in.size());
    ASSERT_EQ(0, std::memcmp(out.data(), in.data(), in.size()));
    ASSERT_EQ(write_all(hi, in), in.size());  // and back
    ASSERT_EQ(lo.read_some(out.data(), out.size(), &wake), in.size());
    ASSERT_EQ(0, std::memcmp(out.data(), in.data(), in.size()));
  }
  // A full ring takes no more.
  std::vector<unsigned char> big(5000, 1);
  EXPECT_EQ(write_all(lo, big), 4096u);
  EXPECT_EQ(lo.writable(), 0u);
}

TEST(ShmRing, PositionsOutsideTheRingAreReportedNotCopied) {
  const std::string name = segment_name("corrupt");
  shm::Link lo(name, 4096, true, true);
  shm::Link hi(name, 4096, false, false);
  // A third mapping plays the peer that writes over the shared positions.
  int fd = shm_open(name.c_str(), O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  const std::size_t map_bytes = 2 * (sizeof(shm::RingCtl) + 4096);
  void* base = mmap(nullptr, map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  lo.unlink();
  ASSERT_NE(base, MAP_FAILED);
  auto* ring0 = static_cast<shm::RingCtl*>(base);  // lo writes ring 0, hi reads it

  std::vector<unsigned char> out(1 << 20);
  bool wake = false;
  ring0->head.store(ring0->tail.load() + (1u << 20));  // "1 MiB to read" in a 4 KiB ring
  EXPECT_EQ(hi.readable(), 4096u);                     // clamped: never more than the ring
  EXPECT_EQ(hi.read_some(out.data(), out.size(), &wake), shm::Link::kCorrupt);

  ring0->head.store(0);
  ring0->tail.store(4097);  // the reader claims to be ahead of the writer
  std::vector<unsigned char> v(100, 2);
  EXPECT_EQ(write_all(lo, v), shm::Link::kCorrupt);
  munmap(base, map_bytes);
}
