// Configuration: every RINGPRESS_* environment variable the runtime reads, in one table, read in
// one file (env.cc; nothing else calls getenv). Python reads its variables through the same table
// (_core.env_*), and docs/configuration.md lists the same rows (a test compares them).
//
// Contract
//   * Precedence everywhere: an explicit argument (a non-empty/non-zero option) > the
//     environment > the table's default. Callers pass their argument first; an empty or unset
//     variable counts as unset.
//   * A malformed value raises UsageError naming the variable and the value.
//   * Each variable is read when the object it configures is made (a Communicator, a Context),
//     or once per process where the table says so (RINGPRESS_SIMD, _FAULT, _SEGMENT_BYTES,
//     _SMALL_BYTES): never per request.
//   * Asking for a name that is not in the table is a programming error (std::logic_error).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ringpress::env {

struct Var {
  const char* name;           // "RINGPRESS_TIMEOUT"
  const char* type;           // "seconds", "bytes", "int", "string", or the choices "a/b/c"
  const char* default_value;  // "" = none
  const char* read;           // when it is read
  const char* doc;            // one line
};

const std::vector<Var>& table();

// The value if set and non-empty, else nullopt.
std::optional<std::string> raw(std::string_view name);
// The value, else the table's default.
std::string string(std::string_view name);
// A positive integer (UsageError otherwise), else the default.
std::uint64_t positive(std::string_view name);
// Positive decimal seconds (UsageError otherwise), else the default.
std::chrono::milliseconds seconds(std::string_view name);

// Resolution helpers: argument > environment > default.
inline std::string pick(const std::string& arg, std::string_view name) {
  return arg.empty() ? string(name) : arg;
}
inline std::chrono::milliseconds pick(std::chrono::milliseconds arg, std::string_view name) {
  return arg.count() > 0 ? arg : seconds(name);
}
inline std::uint64_t pick(std::uint64_t arg, std::string_view name) {
  return arg > 0 ? arg : positive(name);
}

// UsageError when a variable this runtime no longer reads is set (so it is not silently
// ignored), naming its replacement.
void check_retired();

}  // namespace ringpress::env
