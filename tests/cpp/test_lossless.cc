// Lossless stage and thread pool, at the C++ level (Python tests cover the API and the format).
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <random>
#include <vector>

#include "ringpress/error.h"
#include "ringpress/lossless.h"
#include "ringpress/thread_pool.h"

using namespace ringpress;

namespace {
std::vector<float> gradient_like(std::size_t n, unsigned seed) {
  std::mt19937 g(seed);
  std::student_t_distribution<float> d(3.0f);
  std::vector<float> x(n);
  for (float& v : x) v = d(g) * 1e-3f;
  return x;
}

std::vector<std::uint8_t> encode(const std::vector<float>& x, const LosslessOptions& o) {
  std::uint64_t shape[1] = {x.size()};
  const std::uint32_t bs = o.block_size ? o.block_size : default_block_size(4);
  std::vector<std::uint8_t> out(encode_bound(x.size() * 4, 1, bs));
  out.resize(
      lossless_encode(x.data(), x.size() * 4, DType::kF32, shape, 1, o, out.data(), out.size()));
  return out;
}
}  // namespace

TEST(Lossless, RoundTripEveryMode) {
  const auto x = gradient_like(300001, 1);
  for (auto codec : {wire::Codec::kZstd, wire::Codec::kLz4, wire::Codec::kNone}) {
    for (auto sh :
         {ShuffleMode::kAuto, ShuffleMode::kByte, ShuffleMode::kBit, ShuffleMode::kNone}) {
      for (int threads : {1, 2}) {
        LosslessOptions o;
        o.codec = codec;
        o.shuffle = sh;
        o.threads = threads;
        o.block_size = 64 * 1024;
        const auto frame = encode(x, o);
        std::vector<float> y(x.size());
        lossless_decode(frame.data(), frame.size(), y.data(), y.size() * 4, threads);
        ASSERT_EQ(std::memcmp(x.data(), y.data(), x.size() * 4), 0)
            << wire::codec_name(codec) << " shuffle " << int(sh) << " threads " << threads;
        // zstd always finds the exponent redundancy; lz4 without a shuffle cannot (stored raw).
        if (codec == wire::Codec::kZstd) EXPECT_LT(frame.size(), x.size() * 4);
        EXPECT_LE(frame.size(), encode_bound(x.size() * 4, 1, o.block_size));
      }
    }
  }
}

// A frame of 24 MiB and more (kStreamOutputBytes) is decoded with non-temporal stores (byte and
// bit shuffled blocks, from the first aligned output vector on): the same bytes at any output
// alignment, and nothing past the end, with one and two threads.
TEST(Lossless, LargeFramesDecodeTheSameAtAnyAlignment) {
  const std::size_t n = (std::size_t{24} << 20) / 4 + 5;
  const auto x = gradient_like(n, 2);
  for (ShuffleMode mode : {ShuffleMode::kByte, ShuffleMode::kBit, ShuffleMode::kAuto}) {
    LosslessOptions o;
    o.shuffle = mode;
    const auto frame = encode(x, o);
    for (std::size_t off : {0, 4, 8, 16, 20, 36}) {
      for (int threads : {1, 2}) {
        std::vector<std::uint8_t> buf(n * 4 + 128, 0xA5);
        std::uint8_t* dst =
            buf.data() + (64 - reinterpret_cast<std::uintptr_t>(buf.data()) % 64) % 64 + off;
        lossless_decode(frame.data(), frame.size(), dst, n * 4, threads);
        ASSERT_EQ(std::memcmp(x.data(), dst, n * 4), 0)
            << "shuffle " << int(mode) << " offset " << off << " threads " << threads;
        for (std::uint8_t* p = dst + n * 4; p < buf.data() + buf.size(); ++p) ASSERT_EQ(*p, 0xA5);
        for (std::uint8_t* p = buf.data(); p < dst; ++p) ASSERT_EQ(*p, 0xA5);
      }
    }
  }
}

TEST(Lossless, CorruptionIsAWireFormatErrorWithOp) {
  const auto x = gradient_like(50000, 2);
  auto frame = encode(x, LosslessOptions{});
  frame[frame.size() / 2] ^= 0x40;  // inside block data: the block checksum catches it
  std::vector<float> y(x.size());
  try {
    lossless_decode(frame.data(), frame.size(), y.data(), y.size() * 4);
    FAIL() << "corrupt frame decoded";
  } catch (const WireFormatError& e) {
    EXPECT_EQ(e.op(), "decompress");
    EXPECT_NE(std::string(e.what()).find("checksum"), std::string::npos) << e.what();
  }
}

TEST(Lossless, OptionErrors) {
  const auto x = gradient_like(100, 3);
  LosslessOptions o;
  o.level = 100;
  EXPECT_THROW(encode(x, o), UsageError);
  o = LosslessOptions{};
  o.block_size = 6;  // not a multiple of 4
  EXPECT_THROW(encode(x, o), UsageError);
}

TEST(ThreadPool, RunsEveryIndexOnceAndPropagatesErrors) {
  std::vector<std::atomic<int>> hits(1000);
  parallel_for(hits.size(), 2, [&](std::size_t i, int worker) {
    EXPECT_TRUE(worker == 0 || worker == 1);
    hits[i].fetch_add(1);
  });
  for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  ScopedErrorContext ctx("allreduce", 4);
  EXPECT_THROW(parallel_for(100, 2,
                            [&](std::size_t i, int) {
                              if (i == 57) RP_THROW(CodecError, "boom at ", i);
                            }),
               CodecError);
  // The pool is still usable after an error.
  std::atomic<int> n{0};
  parallel_for(64, 2, [&](std::size_t, int) { n.fetch_add(1); });
  EXPECT_EQ(n.load(), 64);
}
