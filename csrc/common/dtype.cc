// dtype table (codes are wire-format values: never renumber).
#include "ringpress/dtype.h"

#include "ringpress/error.h"

namespace ringpress {
namespace {
struct Entry {
  const char* name;
  std::size_t size;
};
constexpr Entry kTable[kNumDTypes] = {
    {"bytes", 1},    {"uint8", 1},   {"int8", 1},    {"int16", 2},  {"uint16", 2},
    {"int32", 4},    {"uint32", 4},  {"int64", 8},   {"uint64", 8}, {"float16", 2},
    {"bfloat16", 2}, {"float32", 4}, {"float64", 8}, {"bool", 1},
};
}  // namespace

bool dtype_valid(std::uint8_t code) noexcept {
  return code < kNumDTypes;
}
std::size_t dtype_size(DType t) noexcept {
  return kTable[static_cast<int>(t)].size;
}
const char* dtype_name(DType t) noexcept {
  return kTable[static_cast<int>(t)].name;
}

DType dtype_from_name(const std::string& name) {
  for (int i = 0; i < kNumDTypes; ++i) {
    if (name == kTable[i].name) return static_cast<DType>(i);
  }
  RP_THROW(UsageError, "unsupported dtype '", name,
           "' (supported: float32, float64, float16, bfloat16, int8..int64, uint8..uint64, bool, "
           "bytes)");
}

}  // namespace ringpress
