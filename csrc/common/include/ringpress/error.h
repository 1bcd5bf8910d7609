// ringpress error model.
//
// Contract: every failure the core reports is a ringpress::Error subclass carrying
//   kind   which Python class it maps to (ringpress.errors.<Name>)
//   rank   this process's rank, or -1 when not inside a communicator
//   peer   the remote rank involved, or -1
//   op     the operation ("allreduce", "decompress", "tcp.connect", ...)
//   detail the human-readable cause, including both compared values for RP_ENFORCE_{EQ,LE,...}
// Errors are raised through the RP_ENFORCE* / RP_THROW macros below, never by `throw` directly, so
// that every message has the same shape:
//   "<op> failed on rank R (peer P): <detail> [file.cc:123]"
// Context comes from an explicit ErrorContext (transports, which know their peer) or from the
// thread's current ScopedErrorContext (set by the engine/collective/codec entry points), so code
// deep in a codec does not need to thread rank/op through every call.
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace ringpress {

enum class ErrorKind : std::uint8_t {
  kUsage = 0,       // bad arguments from the caller (wrong dtype, size mismatch, bad option)
  kTransport = 1,   // connection lost, peer died, protocol violation on a socket/shm ring
  kTimeout = 2,     // an operation did not complete within its deadline
  kWireFormat = 3,  // a frame that is corrupt, truncated, of a future version, bad checksum
  kCodec = 4,       // a codec failed (compressor library error, output too small, ...)
  kInternal = 5,    // a broken invariant inside ringpress: a bug, please report it
};

// Python class name for a kind: "UsageError", "TransportError", ...
const char* error_kind_name(ErrorKind kind) noexcept;

struct ErrorContext {
  int rank = -1;
  int peer = -1;
  std::string op;
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, ErrorContext ctx, std::string detail, const char* file, int line);

  ErrorKind kind() const noexcept { return kind_; }
  int rank() const noexcept { return ctx_.rank; }
  int peer() const noexcept { return ctx_.peer; }
  const std::string& op() const noexcept { return ctx_.op; }
  const std::string& detail() const noexcept { return detail_; }
  const char* file() const noexcept { return file_; }
  int line() const noexcept { return line_; }

 private:
  ErrorKind kind_;
  ErrorContext ctx_;
  std::string detail_;
  const char* file_;
  int line_;
};

#define RP_DECLARE_ERROR(Name, Kind)                                       \
  class Name : public Error {                                              \
   public:                                                                 \
    static constexpr ErrorKind kKind = ErrorKind::Kind;                    \
    Name(ErrorContext ctx, std::string detail, const char* file, int line) \
        : Error(kKind, std::move(ctx), std::move(detail), file, line) {}   \
  }

RP_DECLARE_ERROR(UsageError, kUsage);
RP_DECLARE_ERROR(TransportError, kTransport);
RP_DECLARE_ERROR(TimeoutError, kTimeout);
RP_DECLARE_ERROR(WireFormatError, kWireFormat);
RP_DECLARE_ERROR(CodecError, kCodec);
RP_DECLARE_ERROR(InternalError, kInternal);
#undef RP_DECLARE_ERROR

// The calling thread's current context (rank/peer/op), used by the macros without explicit ctx.
const ErrorContext& current_error_context() noexcept;

// RAII: sets fields of the thread's context for the scope; fields left at -1/"" are inherited
// from the enclosing scope. Nesting restores the previous context on exit.
class ScopedErrorContext {
 public:
  explicit ScopedErrorContext(std::string op, int rank = -1, int peer = -1);
  ~ScopedErrorContext();
  ScopedErrorContext(const ScopedErrorContext&) = delete;
  ScopedErrorContext& operator=(const ScopedErrorContext&) = delete;

 private:
  ErrorContext saved_;
};

namespace detail {
template <typename... Args>
std::string str_cat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
// Characters print as numbers in comparisons (a uint8_t dtype code must not print as a glyph).
template <typename T>
decltype(auto) printable(const T& v) {
  if constexpr (std::is_same_v<T, char> || std::is_same_v<T, signed char> ||
                std::is_same_v<T, unsigned char>) {
    return static_cast<int>(v);
  } else {
    return (v);
  }
}
[[noreturn]] void throw_error(ErrorKind kind, ErrorContext ctx, std::string detail,
                              const char* file, int line);
}  // namespace detail

}  // namespace ringpress

// RP_THROW(ErrType, parts...)                       throw with the thread's current context
// RP_THROW_CTX(ErrType, ctx, parts...)              throw with an explicit ErrorContext
#define RP_THROW(ErrType, ...)                                           \
  ::ringpress::detail::throw_error(::ringpress::ErrType::kKind,          \
                                   ::ringpress::current_error_context(), \
                                   ::ringpress::detail::str_cat(__VA_ARGS__), __FILE__, __LINE__)
#define RP_THROW_CTX(ErrType, ctx, ...)                                \
  ::ringpress::detail::throw_error(::ringpress::ErrType::kKind, (ctx), \
                                   ::ringpress::detail::str_cat(__VA_ARGS__), __FILE__, __LINE__)

// RP_ENFORCE(cond, ErrType, parts...): throw ErrType when cond is false.
#define RP_ENFORCE(cond, ErrType, ...)                              \
  do {                                                              \
    if (__builtin_expect(!(cond), 0)) {                             \
      RP_THROW(ErrType, "check '" #cond "' failed: ", __VA_ARGS__); \
    }                                                               \
  } while (0)

// RP_ENFORCE_{EQ,NE,LT,LE,GT,GE}(a, b, ErrType, parts...): the message carries both values.
#define RP_ENFORCE_BINARY_(a, b, opstr, ErrType, ...)                      \
  do {                                                                     \
    const auto& rp_a_ = (a);                                               \
    const auto& rp_b_ = (b);                                               \
    if (__builtin_expect(!(rp_a_ opstr rp_b_), 0)) {                       \
      RP_THROW(ErrType, "expected " #a " " #opstr " " #b " (",             \
               ::ringpress::detail::printable(rp_a_), " vs ",              \
               ::ringpress::detail::printable(rp_b_), "): ", __VA_ARGS__); \
    }                                                                      \
  } while (0)
#define RP_ENFORCE_EQ(a, b, ErrType, ...) RP_ENFORCE_BINARY_(a, b, ==, ErrType, __VA_ARGS__)
#define RP_ENFORCE_NE(a, b, ErrType, ...) RP_ENFORCE_BINARY_(a, b, !=, ErrType, __VA_ARGS__)
#define RP_ENFORCE_LT(a, b, ErrType, ...) RP_ENFORCE_BINARY_(a, b, <, ErrType, __VA_ARGS__)
#define RP_ENFORCE_LE(a, b, ErrType, ...) RP_ENFORCE_BINARY_(a, b, <=, ErrType, __VA_ARGS__)
#define RP_ENFORCE_GT(a, b, ErrType, ...) RP_ENFORCE_BINARY_(a, b, >, ErrType, __VA_ARGS__)
#define RP_ENFORCE_GE(a, b, ErrType, ...) RP_ENFORCE_BINARY_(a, b, >=, ErrType, __VA_ARGS__)
