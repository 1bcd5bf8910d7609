// The payload, decoder and error feedback shared by the sparse wire codecs "topk" (id 6,
// topk_sparse.cc), "randomk" (id 10, randomk_sparse.cc) and "threshold" (id 11,
// threshold_sparse.cc); each of those files only chooses which entries to send. Internal header.
//
// Payload (docs/wire-format.md, "Wire codec payloads"): u64 I (bytes of the index stream) | I
// bytes of strictly ascending indices, delta coded (topk.h, "Index coding": u32 count m, blocks of
// <= 128 deltas with a u8 bit width) | m values, little-endian float32, or float16 (round to
// nearest even) with the parameter values = "fp16". Decode requires n <= 2^32 - 1 (u32 indices),
// I <= len - 8, m <= n, every index < n, and len - 8 - I = m x (4 or 2) exactly (so the m entries
// it buffers are justified by the bytes present; else WireFormatError); decode+reduce adds the
// values at their indices (a scatter-add; float32 values: decoded and added in one pass, a
// checked block of 128 indices at a time, so a stream that fails later has added its earlier
// blocks), plain decode writes them there (bit for bit, -0.0 included) and zeros elsewhere.
// Error feedback (override of the generic helper, no decode pass): r = x, except at the sent
// entries, where r = x - x' (x' the value as sent: 0 for float32 values, which go bit-exact, and
// wherever x' is x bit for bit, e.g. +-Inf or NaN), so r = x - decode(payload); and r = 0 at every
// non-finite x, sent or not (codec.h: the residual stays finite; a NaN or Inf is an overflow step,
// whose value is lost, not carried). topk and threshold select NaN and +-Inf before any number
// (topk.h), so r is read again only when a sent value is not finite; for randomk the add pass
// (encode_feedback_add) notes them, and encode_feedback reads r once more.
// Cost: selection (the codec's), then the index coding (~(1 + bits per delta / 8) bytes per
// entry) and m values; decode m scattered writes (plus zeroing n floats for a plain decode).
// Schedule: allgather (allreduce_sparse.cc): every rank's payload is decoded and added by all.
#pragma once

#include <cstdint>
#include <vector>

#include "builtin.h"
#include "ringpress/topk.h"

namespace ringpress::wire_codecs {

class SparseCodec : public Codec {
 public:
  explicit SparseCodec(const CodecParams& p);
  // UsageError above 2^32 - 1 elements (indices are u32).
  std::size_t bound(std::size_t count) const override;
  std::size_t min_payload(std::size_t) const override { return 8 + 4; }  // I, then the count
  std::size_t word() const override { return half_ ? 2 : 4; }
  std::size_t encode(const void* src, std::size_t count, void* out, std::uint64_t seed) override;
  void decode(const void* in, std::size_t len, void* dst, std::size_t count, bool reduce) override;
  std::size_t encode_feedback(float* x, float* r, std::size_t count, void* out, std::uint64_t seed,
                              bool keep) override;
  std::size_t encode_feedback_add(const float* g, float* r, std::size_t count, void* out,
                                  std::uint64_t seed) override;

  // k = min(n, ceil(ratio * n)): the entries topk and randomk send.
  static std::size_t k_of(double ratio, std::size_t n);
  // UsageError unless values is "fp32" or "fp16".
  static void check_values(const CodecParams& p);

 protected:
  // Fills sv with the entries to send (ascending indices, values = x at them).
  virtual void select(const float* x, std::size_t n, std::uint64_t seed,
                      topk::SparseVector* sv) = 0;
  // select() over x = r + g, leaving r = r + g (every element). Default: the add, then select(r).
  // A codec whose selection reads all of x anyway folds the add into that pass (topk sampled).
  virtual void select_accumulate(const float* g, float* r, std::size_t n, std::uint64_t seed,
                                 topk::SparseVector* sv);
  // The most entries select() returns for n elements.
  virtual std::size_t max_selected(std::size_t n) const = 0;
  // Does select() take every non-finite value before any number (topk, threshold)? Then a
  // non-finite value can stay unsent only when a sent one is non-finite too. Otherwise (randomk)
  // error feedback looks for non-finite values in r itself.
  virtual bool sends_nonfinite_first() const { return false; }

 private:
  void checked_select(const float* x, std::size_t n, std::uint64_t seed);
  void half_values();  // h_ = fp16 of sv_.values, with values = "fp16"
  // r = x - decode(payload) given r == x before the call (the sent entries fixed up only), and
  // r = 0 wherever x is not finite.
  void fix_residual(float* r, std::size_t n);
  std::size_t write(std::size_t n, void* out);  // the payload of sv_ (and h_ for fp16 values)

  bool half_;
  int r_nonfinite_ = -1;  // set by the default select_accumulate's add: r holds NaN/Inf (1) or not
  topk::SparseVector sv_;
  std::vector<std::uint16_t> h_;
  std::vector<std::uint32_t> idx_;
  std::vector<float> val_;
};

}  // namespace ringpress::wire_codecs
