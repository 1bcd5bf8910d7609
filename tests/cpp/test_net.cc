// The socket layer's interface choice (net::interface_addr, RINGPRESS_SOCKET_IFNAME's syntax).
#include <gtest/gtest.h>

#include <string>

#include "../../csrc/transport/net.h"
#include "ringpress/error.h"

namespace rp = ringpress;

namespace {

std::string usage_error(const std::string& spec) {
  try {
    rp::net::interface_addr(spec);
  } catch (const rp::UsageError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Net, InterfaceByNameAndByList) {
  EXPECT_EQ(rp::net::interface_addr("lo"), "127.0.0.1");
  EXPECT_EQ(rp::net::interface_addr(" lo "), "127.0.0.1");        // blanks around names
  EXPECT_EQ(rp::net::interface_addr("rpnope0,lo"), "127.0.0.1");  // tried in order
  EXPECT_EQ(rp::net::interface_addr("lo,rpnope0"), "127.0.0.1");
}

TEST(Net, ExclusionPrefersNonLoopback) {
  // "^" excludes nothing: the first non-loopback interface if there is one, else lo.
  const std::string any = rp::net::interface_addr("^");
  const std::string not_lo = rp::net::interface_addr("^rpnope0");
  EXPECT_EQ(any, not_lo);
  EXPECT_FALSE(any.empty());
  if (any != "127.0.0.1") {
    EXPECT_EQ(rp::net::interface_addr("^lo"), any);
  } else {
    EXPECT_NE(usage_error("^lo").find("every interface is excluded"), std::string::npos);
  }
}

TEST(Net, MissingInterfaceNamesItAndListsTheOthers) {
  const std::string msg = usage_error("rpnope0,rpnope1");
  EXPECT_NE(msg.find("RINGPRESS_SOCKET_IFNAME='rpnope0,rpnope1'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("lo (127.0.0.1)"), std::string::npos) << msg;
  EXPECT_NE(usage_error(" , ").find("names no interface"), std::string::npos);
  EXPECT_NE(usage_error("").find("names no interface"), std::string::npos);
  EXPECT_NE(usage_error("l"), "");  // names match exactly, not by prefix
}
