// Byte shuffle and bit shuffle: the generic kernels against the layout formulas of
// ringpress/shuffle.h, and every SIMD level built and supported here against the generic kernels
// (bit-exact), with unaligned pointers, remainders, guard bytes and round trips.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ringpress/shuffle.h"

using namespace ringpress;

namespace {

constexpr std::size_t kGuard = 64;
constexpr std::uint8_t kFill = 0xA5;
const std::size_t kElemSizes[] = {1, 2, 3, 4, 5, 8, 16};
// Spread of buffer sizes: empty, below one element, below/at/above SIMD steps and the bit-shuffle
// block sizes, large with odd remainders.
const std::size_t kSizes[] = {0,    1,     7,     8,      63,       64,
                              65,   255,   256,   511,    1000,     4109,
                              8197, 20011, 65539, 200013, 1u << 20, (1u << 20) + 7};

std::vector<std::uint8_t> random_bytes(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::uint8_t> v(n);
  for (auto& c : v) c = static_cast<std::uint8_t>(rng() >> 24);
  return v;
}

// The input placed at offset `off` at the very end of its allocation (an over-read is a heap
// overflow under ASan).
struct Input {
  std::vector<std::uint8_t> buf;
  std::size_t off;
  Input(const std::vector<std::uint8_t>& data, std::size_t offset)
      : buf(offset + data.size()), off(offset) {
    if (!data.empty()) std::memcpy(buf.data() + off, data.data(), data.size());
  }
  const std::uint8_t* ptr() const { return buf.data() + off; }
};

// An output at offset `off` with kFill guard bytes on both sides.
struct Output {
  std::vector<std::uint8_t> buf;
  std::size_t off, n;
  Output(std::size_t nbytes, std::size_t offset)
      : buf(offset + nbytes + kGuard, kFill), off(offset), n(nbytes) {}
  std::uint8_t* ptr() { return buf.data() + off; }
  std::vector<std::uint8_t> data() const {
    return std::vector<std::uint8_t>(buf.begin() + off, buf.begin() + off + n);
  }
  bool guards_intact() const {
    for (std::size_t i = 0; i < off; ++i)
      if (buf[i] != kFill) return false;
    for (std::size_t i = off + n; i < buf.size(); ++i)
      if (buf[i] != kFill) return false;
    return true;
  }
};

typedef void (*WholeFn)(const ShuffleKernels&, const void*, void*, std::size_t, std::size_t);

std::vector<std::uint8_t> run(WholeFn fn, const ShuffleKernels& k,
                              const std::vector<std::uint8_t>& in, std::size_t s,
                              std::size_t src_off, std::size_t dst_off, bool* guards_ok) {
  Input src(in, src_off);
  Output dst(in.size(), dst_off);
  fn(k, src.ptr(), dst.ptr(), in.size(), s);
  *guards_ok = dst.guards_intact();
  return dst.data();
}

const ShuffleKernels& generic() {
  const ShuffleKernels* g = shuffle_kernels_for(SimdLevel::kGeneric);
  EXPECT_NE(g, nullptr);
  return *g;
}

// ------------------------------------------------------------------ generic vs the formulas

TEST(ShuffleGeneric, ByteShuffleMatchesLayoutFormula) {
  for (std::size_t s : kElemSizes)
    for (std::size_t nbytes : {0u, 1u, 7u, 64u, 65u, 255u, 4109u}) {
      SCOPED_TRACE("s=" + std::to_string(s) + " nbytes=" + std::to_string(nbytes));
      const auto in = random_bytes(nbytes, static_cast<std::uint32_t>(s * 7919 + nbytes));
      std::vector<std::uint8_t> out(nbytes + 1, kFill);
      byte_shuffle(generic(), in.data(), out.data(), nbytes, s);
      const std::size_t n = nbytes / s;
      for (std::size_t b = 0; b < s; ++b)
        for (std::size_t i = 0; i < n; ++i)
          ASSERT_EQ(out[b * n + i], in[i * s + b]) << b << " " << i;
      for (std::size_t j = n * s; j < nbytes; ++j) ASSERT_EQ(out[j], in[j]);  // remainder verbatim
      EXPECT_EQ(out[nbytes], kFill);
    }
}

TEST(ShuffleGeneric, BitShuffleMatchesLayoutFormula) {
  for (std::size_t s : kElemSizes)
    for (std::size_t nbytes : {0u, 1u, 7u, 64u, 65u, 255u, 4109u}) {
      SCOPED_TRACE("s=" + std::to_string(s) + " nbytes=" + std::to_string(nbytes));
      const auto in = random_bytes(nbytes, static_cast<std::uint32_t>(s * 104729 + nbytes));
      std::vector<std::uint8_t> out(nbytes + 1, kFill);
      bit_shuffle(generic(), in.data(), out.data(), nbytes, s);
      const std::size_t n8 = (nbytes / s) / 8 * 8, pb = n8 / 8;
      for (std::size_t b = 0; b < s; ++b)
        for (std::size_t k = 0; k < 8; ++k)
          for (std::size_t i = 0; i < n8; ++i) {
            const int want = (in[i * s + b] >> k) & 1;
            const int got = (out[(8 * b + k) * pb + i / 8] >> (i % 8)) & 1;
            ASSERT_EQ(got, want) << "b=" << b << " k=" << k << " i=" << i;
          }
      for (std::size_t j = n8 * s; j < nbytes; ++j) ASSERT_EQ(out[j], in[j]);  // remainder verbatim
      EXPECT_EQ(out[nbytes], kFill);
    }
}

TEST(ShuffleGeneric, RoundTrip) {
  for (std::size_t s : kElemSizes)
    for (std::size_t nbytes : {0u, 5u, 64u, 4109u, 65539u}) {
      const auto in = random_bytes(nbytes, static_cast<std::uint32_t>(nbytes + s));
      std::vector<std::uint8_t> mid(nbytes), back(nbytes);
      byte_shuffle(generic(), in.data(), mid.data(), nbytes, s);
      byte_unshuffle(generic(), mid.data(), back.data(), nbytes, s);
      EXPECT_EQ(back, in) << "byte s=" << s << " nbytes=" << nbytes;
      bit_shuffle(generic(), in.data(), mid.data(), nbytes, s);
      bit_unshuffle(generic(), mid.data(), back.data(), nbytes, s);
      EXPECT_EQ(back, in) << "bit s=" << s << " nbytes=" << nbytes;
    }
}

// ------------------------------------------------------------------ SIMD levels vs generic

class ShuffleLevel : public ::testing::TestWithParam<SimdLevel> {};

TEST_P(ShuffleLevel, MatchesGenericAndRoundTrips) {
  const ShuffleKernels* k = shuffle_kernels_for(GetParam());
  if (k == nullptr) GTEST_SKIP() << simd_level_name(GetParam()) << " not built or not supported";
  EXPECT_STREQ(k->isa, simd_level_name(GetParam()));
  const ShuffleKernels& g = generic();
  struct Op {
    const char* name;
    WholeFn fwd, inv;
  };
  const Op ops[] = {{"byte", byte_shuffle, byte_unshuffle}, {"bit", bit_shuffle, bit_unshuffle}};
  for (std::size_t s : kElemSizes)
    for (std::size_t nbytes : kSizes) {
      const auto in = random_bytes(nbytes, static_cast<std::uint32_t>(s * 31 + nbytes));
      for (std::size_t so = 0; so < 4; ++so)
        for (std::size_t d = 0; d < 4; ++d) {
          if (nbytes > 8192 && d != so) continue;  // large buffers: 4 offset pairs are enough
          const std::size_t dof = (so + d) % 4;
          for (const Op& op : ops) {
            SCOPED_TRACE(std::string(op.name) + " s=" + std::to_string(s) +
                         " nbytes=" + std::to_string(nbytes) + " src_off=" + std::to_string(so) +
                         " dst_off=" + std::to_string(dof));
            bool ok_ref = false, ok = false, ok_back = false;
            const auto ref = run(op.fwd, g, in, s, so, dof, &ok_ref);
            const auto got = run(op.fwd, *k, in, s, so, dof, &ok);
            ASSERT_TRUE(ok_ref);
            ASSERT_TRUE(ok) << "shuffle wrote outside its output";
            ASSERT_TRUE(got == ref) << "differs from the generic kernel";
            const auto back = run(op.inv, *k, got, s, dof, so, &ok_back);
            ASSERT_TRUE(ok_back) << "unshuffle wrote outside its output";
            ASSERT_TRUE(back == in) << "unshuffle does not restore the input";
          }
        }
    }
}

// The unshuffle from separate planes, each in its own allocation (as the lossless decoder gives
// it: raw planes in the frame, decoded ones in scratch), plain and streaming (non-temporal stores
// from the first aligned output vector on): the generic kernel's bytes at every output
// alignment within 64 bytes, nothing written outside.
TEST_P(ShuffleLevel, UnshuffleFromSeparatePlanesMatchesGeneric) {
  const ShuffleKernels* k = shuffle_kernels_for(GetParam());
  if (k == nullptr) GTEST_SKIP() << simd_level_name(GetParam()) << " not built or not supported";
  ASSERT_NE(k->byte_unshuffle_planes, nullptr);
  for (std::size_t s : kElemSizes)
    for (std::size_t nbytes : kSizes) {
      const std::size_t n = nbytes / s;
      const auto in = random_bytes(n * s, static_cast<std::uint32_t>(s * 17 + nbytes));
      std::vector<std::uint8_t> ref(n * s);
      byte_unshuffle(generic(), in.data(), ref.data(), n * s, s);
      std::vector<std::vector<std::uint8_t>> copies(s);
      std::vector<const std::uint8_t*> planes(s);
      for (std::size_t b = 0; b < s; ++b) {
        copies[b].assign(in.begin() + static_cast<long>(b * n),
                         in.begin() + static_cast<long>((b + 1) * n));
        planes[b] = copies[b].data();
      }
      std::vector<std::uint8_t> buf(n * s + 3 * kGuard);
      const std::size_t to64 = (64 - reinterpret_cast<std::uintptr_t>(buf.data()) % 64) % 64;
      for (bool stream : {false, true})
        for (std::size_t off : {0, 1, 2, 4, 8, 16, 24, 32, 40, 48, 56}) {
          if (nbytes > 8192 && off % 8 != 0) continue;
          std::fill(buf.begin(), buf.end(), kFill);
          std::uint8_t* dst = buf.data() + to64 + off;
          byte_unshuffle_planes(*k, planes.data(), dst, n, s, stream);
          SCOPED_TRACE("s=" + std::to_string(s) + " n=" + std::to_string(n) +
                       " dst%64=" + std::to_string(off) + " stream=" + std::to_string(stream));
          ASSERT_EQ(0, n ? std::memcmp(dst, ref.data(), n * s) : 0);
          for (std::uint8_t* p = buf.data(); p < dst; ++p) ASSERT_EQ(*p, kFill) << "before";
          for (std::uint8_t* p = dst + n * s; p < buf.data() + buf.size(); ++p)
            ASSERT_EQ(*p, kFill) << "after";
        }
    }
}

// The streaming bit unshuffle (non-temporal stores for the whole blocks after a head that
// aligns the output): the generic kernel's bytes at every output alignment within 64 bytes,
// nothing written outside.
TEST_P(ShuffleLevel, StreamingBitUnshuffleMatchesGeneric) {
  const ShuffleKernels* k = shuffle_kernels_for(GetParam());
  if (k == nullptr) GTEST_SKIP() << simd_level_name(GetParam()) << " not built or not supported";
  ASSERT_NE(k->bit_unshuffle_stream, nullptr);
  std::vector<std::size_t> sizes(std::begin(kSizes), std::end(kSizes));
  sizes.push_back(3 * 16384 + 24 * 8 + 8);  // whole blocks after every head, and a tail
  for (std::size_t s : kElemSizes)
    for (std::size_t nbytes : sizes) {
      const auto in = random_bytes(nbytes, static_cast<std::uint32_t>(s * 19 + nbytes));
      std::vector<std::uint8_t> ref(nbytes);
      bit_unshuffle(generic(), in.data(), ref.data(), nbytes, s);
      std::vector<std::uint8_t> buf(nbytes + 3 * kGuard);
      const std::size_t to64 = (64 - reinterpret_cast<std::uintptr_t>(buf.data()) % 64) % 64;
      for (std::size_t off : {0, 1, 2, 4, 8, 16, 24, 32, 48}) {
        if (nbytes > 8192 && off % 8 != 0 && off != 1) continue;
        std::fill(buf.begin(), buf.end(), kFill);
        std::uint8_t* dst = buf.data() + to64 + off;
        bit_unshuffle_stream(*k, in.data(), dst, nbytes, s);
        SCOPED_TRACE("s=" + std::to_string(s) + " nbytes=" + std::to_string(nbytes) +
                     " dst%64=" + std::to_string(off));
        ASSERT_EQ(0, nbytes ? std::memcmp(dst, ref.data(), nbytes) : 0);
        for (std::uint8_t* p = buf.data(); p < dst; ++p) ASSERT_EQ(*p, kFill) << "before";
        for (std::uint8_t* p = dst + nbytes; p < buf.data() + buf.size(); ++p)
          ASSERT_EQ(*p, kFill) << "after";
      }
    }
}

// Bit planes of a single set bit per element position: catches plane/bit-order mix-ups that
// random data might hide behind a compensating error in the inverse.
TEST_P(ShuffleLevel, BitShuffleSingleBits) {
  const ShuffleKernels* k = shuffle_kernels_for(GetParam());
  if (k == nullptr) GTEST_SKIP() << simd_level_name(GetParam()) << " not built or not supported";
  for (std::size_t s : {1u, 2u, 4u, 8u}) {
    const std::size_t n = 4096, nbytes = n * s;
    std::vector<std::uint8_t> in(nbytes, 0), ref(nbytes), got(nbytes);
    for (std::size_t i = 0; i < n; ++i)
      in[i * s + (i / 8) % s] = static_cast<std::uint8_t>(1u << (i % 8));
    bit_shuffle(generic(), in.data(), ref.data(), nbytes, s);
    bit_shuffle(*k, in.data(), got.data(), nbytes, s);
    EXPECT_TRUE(got == ref) << "s=" << s;
  }
}

INSTANTIATE_TEST_SUITE_P(Levels, ShuffleLevel,
                         ::testing::Values(SimdLevel::kSSE2, SimdLevel::kAVX2, SimdLevel::kAVX512),
                         [](const ::testing::TestParamInfo<SimdLevel>& info) {
                           return std::string(simd_level_name(info.param));
                         });

// ------------------------------------------------------------------ dispatch

TEST(ShuffleDispatch, ChosenTableMatchesSimdLevel) {
  const ShuffleKernels& k = shuffle_kernels();
  ASSERT_NE(&k, nullptr);
  ASSERT_NE(k.isa, nullptr);
  std::string want = simd_level_name(simd_level());
  for (auto& c : want) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  EXPECT_EQ(std::string(k.isa), want);
  EXPECT_EQ(shuffle_kernels_for(simd_level()), &k);
  EXPECT_NE(k.byte_shuffle, nullptr);
  EXPECT_NE(k.byte_unshuffle, nullptr);
  EXPECT_NE(k.bit_shuffle, nullptr);
  EXPECT_NE(k.bit_unshuffle, nullptr);
  EXPECT_NE(k.byte_unshuffle_planes, nullptr);
  EXPECT_NE(k.bit_unshuffle_stream, nullptr);
}

TEST(ShuffleDispatch, DefaultEntryPointsMatchGeneric) {
  for (std::size_t s : kElemSizes) {
    const std::size_t nbytes = 70001;
    const auto in = random_bytes(nbytes, static_cast<std::uint32_t>(s));
    std::vector<std::uint8_t> ref(nbytes), got(nbytes), back(nbytes);
    byte_shuffle(generic(), in.data(), ref.data(), nbytes, s);
    byte_shuffle(in.data(), got.data(), nbytes, s);
    EXPECT_TRUE(got == ref) << "byte s=" << s;
    byte_unshuffle(got.data(), back.data(), nbytes, s);
    EXPECT_TRUE(back == in) << "byte s=" << s;
    std::fill(back.begin(), back.end(), 0);
    const std::size_t n = nbytes / s;
    std::vector<const std::uint8_t*> planes(s);
    for (std::size_t b = 0; b < s; ++b) planes[b] = got.data() + b * n;
    byte_unshuffle_planes(planes.data(), back.data(), n, s, true);
    EXPECT_EQ(0, std::memcmp(back.data(), in.data(), n * s)) << "byte planes s=" << s;
    bit_shuffle(generic(), in.data(), ref.data(), nbytes, s);
    bit_shuffle(in.data(), got.data(), nbytes, s);
    EXPECT_TRUE(got == ref) << "bit s=" << s;
    bit_unshuffle(got.data(), back.data(), nbytes, s);
    EXPECT_TRUE(back == in) << "bit s=" << s;
  }
}

TEST(ShuffleDispatch, RejectsBadElementSize) {
  std::uint8_t a[16] = {}, b[16] = {};
  EXPECT_ANY_THROW(byte_shuffle(a, b, sizeof a, 0));
  EXPECT_ANY_THROW(bit_shuffle(a, b, sizeof a, 256));
  EXPECT_ANY_THROW(byte_unshuffle(a, b, sizeof a, 0));
  EXPECT_ANY_THROW(bit_unshuffle(a, b, sizeof a, 1000));
}

}  // namespace
