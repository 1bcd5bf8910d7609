// Error formatting and the per-thread error context (see ringpress/error.h).
#include "ringpress/error.h"

#include <cstring>

namespace ringpress {

const char* error_kind_name(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::kUsage: return "UsageError";
    case ErrorKind::kTransport: return "TransportError";
    case ErrorKind::kTimeout: return "TimeoutError";
    case ErrorKind::kWireFormat: return "WireFormatError";
    case ErrorKind::kCodec: return "CodecError";
    case ErrorKind::kInternal: return "InternalError";
  }
  return "RingpressError";
}

namespace {

thread_local ErrorContext t_context;

const char* basename_of(const char* path) {
  const char* slash = std::strrchr(path, '/');
  return slash ? slash + 1 : path;
}

std::string format_message(const ErrorContext& ctx, const std::string& detail, const char* file,
                           int line) {
  std::string msg = ctx.op.empty() ? std::string("ringpress") : ctx.op;
  msg += " failed";
  if (ctx.rank >= 0) msg += " on rank " + std::to_string(ctx.rank);
  if (ctx.peer >= 0)
    msg += (ctx.rank >= 0 ? " (peer " : " (peer rank ") + std::to_string(ctx.peer) + ")";
  msg += ": ";
  msg += detail;
  msg += " [";
  msg += basename_of(file);
  msg += ":" + std::to_string(line) + "]";
  return msg;
}

}  // namespace

Error::Error(ErrorKind kind, ErrorContext ctx, std::string detail, const char* file, int line)
    : std::runtime_error(format_message(ctx, detail, file, line)),
      kind_(kind),
      ctx_(std::move(ctx)),
      detail_(std::move(detail)),
      file_(basename_of(file)),
      line_(line) {}

const ErrorContext& current_error_context() noexcept {
  return t_context;
}

ScopedErrorContext::ScopedErrorContext(std::string op, int rank, int peer) : saved_(t_context) {
  if (!op.empty()) t_context.op = std::move(op);
  if (rank >= 0) t_context.rank = rank;
  if (peer >= 0) t_context.peer = peer;
}

ScopedErrorContext::~ScopedErrorContext() {
  t_context = std::move(saved_);
}

namespace detail {
void throw_error(ErrorKind kind, ErrorContext ctx, std::string detail, const char* file, int line) {
  switch (kind) {
    case ErrorKind::kUsage: throw UsageError(std::move(ctx), std::move(detail), file, line);
    case ErrorKind::kTransport: throw TransportError(std::move(ctx), std::move(detail), file, line);
    case ErrorKind::kTimeout: throw TimeoutError(std::move(ctx), std::move(detail), file, line);
    case ErrorKind::kWireFormat:
      throw WireFormatError(std::move(ctx), std::move(detail), file, line);
    case ErrorKind::kCodec: throw CodecError(std::move(ctx), std::move(detail), file, line);
    case ErrorKind::kInternal: break;
  }
  throw InternalError(std::move(ctx), std::move(detail), file, line);
}
}  // namespace detail

}  // namespace ringpress
