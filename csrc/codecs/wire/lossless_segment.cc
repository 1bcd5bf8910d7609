// Wire codec "lossless" (id 1): each segment is one lossless frame (shuffle + zstd/lz4,
// docs/wire-format.md "Frame"), so any reducible dtype and op, bit-exact. Decode validates the
// frame and requires it to decode to exactly count elements (WireFormatError otherwise, before
// any scratch is sized).
// Cost per segment of n bytes (one thread): zstd-1 with shuffle ~1-3 GB/s encode, decode faster;
// decode+reduce one more pass.
#include "builtin.h"
#include "ringpress/checked.h"
#include "ringpress/error.h"
#include "ringpress/lossless.h"
#include "ringpress/wire.h"

namespace ringpress::wire_codecs {
namespace {

class LosslessSegment final : public Codec {
 public:
  LosslessSegment(const CodecParams& p, DType dtype, ReduceOp op) : dtype_(dtype), op_(op) {
    opts_.codec = codec_from_name(p.codec.c_str());
    opts_.level = p.level;
    opts_.threads = 1;
  }
  std::size_t bound(std::size_t count) const override {
    return encode_bound(checked_mul<UsageError>(count, dtype_size(dtype_), "segment size"), 1, 0);
  }
  std::size_t encode(const void* src, std::size_t count, void* out, std::uint64_t) override {
    std::uint64_t shape[1] = {count};
    return lossless_encode(src, count * dtype_size(dtype_), dtype_, shape, 1, opts_, out,
                           bound(count));
  }
  void decode(const void* in, std::size_t len, void* dst, std::size_t count, bool reduce) override {
    const std::size_t bytes =
        checked_mul<WireFormatError>(count, dtype_size(dtype_), "lossless segment size");
    // Validated (and its size compared) before any scratch is sized.
    const wire::FrameInfo f = wire::parse_frame(in, len);
    RP_ENFORCE_EQ(f.nbytes, std::uint64_t(bytes), WireFormatError,
                  "a lossless segment's frame decodes to the wrong number of bytes");
    if (!reduce) {
      lossless_decode(f, in, dst, bytes, 1);
      return;
    }
    void* tmp = scratch(Scratch::kBytes, bytes);
    lossless_decode(f, in, tmp, bytes, 1);
    reduce_into(dtype_, op_, dst, tmp, count);
  }

 private:
  DType dtype_;
  ReduceOp op_;
  LosslessOptions opts_;
};

}  // namespace

std::unique_ptr<Codec> make_lossless(const CodecParams& p, DType dtype, ReduceOp op) {
  // Checked here, before anything is queued: a bad level must not break the communicator.
  LosslessOptions probe;
  probe.codec = codec_from_name(p.codec.c_str());
  probe.level = p.level;
  check_lossless_options(probe, dtype_size(dtype));
  return std::make_unique<LosslessSegment>(p, dtype, op);
}

}  // namespace ringpress::wire_codecs
