// The error model: ENFORCE macros, message shape, context scoping, typed exceptions.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "ringpress/error.h"

using namespace ringpress;

namespace {
void fail_eq(std::size_t a, std::size_t b) {
  RP_ENFORCE_EQ(a, b, UsageError, "buffer sizes differ");
}
}  // namespace

TEST(Error, EnforceEqCarriesBothValuesAndContext) {
  ScopedErrorContext ctx("allreduce", 3, 1);
  try {
    fail_eq(1024, 2048);
    FAIL() << "no exception";
  } catch (const UsageError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUsage);
    EXPECT_EQ(e.rank(), 3);
    EXPECT_EQ(e.peer(), 1);
    EXPECT_EQ(e.op(), "allreduce");
    const std::string what = e.what();
    EXPECT_NE(what.find("1024"), std::string::npos) << what;
    EXPECT_NE(what.find("2048"), std::string::npos) << what;
    EXPECT_NE(what.find("allreduce failed on rank 3 (peer 1)"), std::string::npos) << what;
    EXPECT_NE(what.find("buffer sizes differ"), std::string::npos) << what;
    EXPECT_NE(what.find("test_error.cc:"), std::string::npos) << what;
  }
}

TEST(Error, EnforcePassesWhenTrue) {
  EXPECT_NO_THROW(fail_eq(7, 7));
  EXPECT_NO_THROW(RP_ENFORCE(1 + 1 == 2, InternalError, "arithmetic"));
}

TEST(Error, ByteValuesPrintAsNumbers) {
  std::uint8_t version = 2, expected = 1;
  try {
    RP_ENFORCE_EQ(version, expected, WireFormatError, "unsupported frame version");
    FAIL();
  } catch (const WireFormatError& e) {
    EXPECT_NE(std::string(e.what()).find("(2 vs 1)"), std::string::npos) << e.what();
  }
}

TEST(Error, ScopesNestAndRestore) {
  EXPECT_EQ(current_error_context().rank, -1);
  {
    ScopedErrorContext outer("allgather", 2);
    {
      ScopedErrorContext inner("decompress");  // inherits rank 2
      EXPECT_EQ(current_error_context().rank, 2);
      EXPECT_EQ(current_error_context().op, "decompress");
      try {
        RP_THROW(CodecError, "zstd said no");
      } catch (const Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::kCodec);
        EXPECT_EQ(e.op(), "decompress");
        EXPECT_EQ(e.rank(), 2);
        EXPECT_EQ(e.peer(), -1);
        EXPECT_EQ(e.detail(), "zstd said no");
      }
    }
    EXPECT_EQ(current_error_context().op, "allgather");
  }
  EXPECT_EQ(current_error_context().rank, -1);
  EXPECT_EQ(current_error_context().op, "");
}

TEST(Error, ExplicitContextAndEveryKindIsItsOwnType) {
  ErrorContext ctx{0, 5, "tcp.recv"};
  EXPECT_THROW(RP_THROW_CTX(TransportError, ctx, "reset"), TransportError);
  EXPECT_THROW(RP_THROW_CTX(TimeoutError, ctx, "late"), TimeoutError);
  EXPECT_THROW(RP_THROW_CTX(WireFormatError, ctx, "bad magic"), WireFormatError);
  EXPECT_THROW(RP_THROW_CTX(CodecError, ctx, "x"), CodecError);
  EXPECT_THROW(RP_THROW_CTX(InternalError, ctx, "x"), InternalError);
  EXPECT_STREQ(error_kind_name(ErrorKind::kTimeout), "TimeoutError");
  try {
    RP_THROW_CTX(TimeoutError, ctx, "no data for 30 s");
  } catch (const Error& e) {
    EXPECT_EQ(
        std::string(e.what()).rfind("tcp.recv failed on rank 0 (peer 5): no data for 30 s", 0), 0u)
        << e.what();
  }
}
