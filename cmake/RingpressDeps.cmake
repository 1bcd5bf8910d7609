# lz4, zstd and xxhash: the system *shared* libraries.
#
# Why shared: Debian's liblz4.a / libzstd.a are not compiled with -fPIC, so they cannot be linked
# into a Python extension (a shared object). Building the libraries from source inside our build
# would need their sources at build time, and this project's machines reach only PyPI and Debian.
# So the extension links liblz4.so.1 / libzstd.so.1 and a distributable wheel is made
# self-contained the standard way: `auditwheel repair` copies the libraries into
# ringpress.libs/ and rewrites the RPATH (scripts/build_wheel.sh, docs/building.md).
include_guard(GLOBAL)

find_package(PkgConfig QUIET)

function(_rp_find_lib name header lib debian_pkg version_macro_file)
  string(TOUPPER "${name}" NAME)
  find_path(RP_${NAME}_INCLUDE_DIR ${header})
  find_library(RP_${NAME}_LIBRARY NAMES ${lib} lib${lib}.so lib${lib}.so.1)
  if(NOT RP_${NAME}_INCLUDE_DIR OR NOT RP_${NAME}_LIBRARY)
    message(FATAL_ERROR
      "ringpress: the ${name} C library (header ${header} and shared lib${lib}.so) was not found.\n"
      "Install it with:   apt-get install ${debian_pkg}     (Debian/Ubuntu)\n"
      "               or:  dnf install ${lib}-devel          (Fedora/RHEL)\n"
      "or run scripts/setup.sh, which installs every system dependency.")
  endif()
  add_library(ringpress::${name} UNKNOWN IMPORTED GLOBAL)
  set_target_properties(ringpress::${name} PROPERTIES
    IMPORTED_LOCATION "${RP_${NAME}_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${RP_${NAME}_INCLUDE_DIR}")
endfunction()

_rp_find_lib(lz4 lz4.h lz4 liblz4-dev lz4.h)
_rp_find_lib(zstd zstd.h zstd libzstd-dev zstd.h)
# xxHash (XXH3-64): the frame checksums (docs/wire-format.md explains the choice).
_rp_find_lib(xxhash xxhash.h xxhash libxxhash-dev xxhash.h)
# OpenSSL's libcrypto: job-key handshakes (HMAC, HKDF) and link encryption (AES-256-GCM);
# docs/security.md says why this library.
_rp_find_lib(crypto openssl/evp.h crypto libssl-dev openssl/evp.h)
file(STRINGS "${RP_CRYPTO_INCLUDE_DIR}/openssl/opensslv.h" _v REGEX "^# *define OPENSSL_VERSION_MAJOR ")
string(REGEX REPLACE ".*MAJOR +([0-9]+).*" "\\1" RP_OPENSSL_MAJOR "${_v}")
if(NOT RP_OPENSSL_MAJOR OR RP_OPENSSL_MAJOR LESS 3)
  message(FATAL_ERROR "ringpress: OpenSSL >= 3.0 (libcrypto) is required; install libssl-dev.")
endif()

# Versions of the headers we compile against (build_info() also reports the runtime versions).
file(STRINGS "${RP_LZ4_INCLUDE_DIR}/lz4.h" _v REGEX "^#define LZ4_VERSION_(MAJOR|MINOR|RELEASE) ")
string(REGEX REPLACE ".*MAJOR +([0-9]+).*MINOR +([0-9]+).*RELEASE +([0-9]+).*" "\\1.\\2.\\3" RP_LZ4_VERSION "${_v}")
file(STRINGS "${RP_ZSTD_INCLUDE_DIR}/zstd.h" _v REGEX "^#define ZSTD_VERSION_(MAJOR|MINOR|RELEASE) ")
string(REGEX REPLACE ".*MAJOR +([0-9]+).*MINOR +([0-9]+).*RELEASE +([0-9]+).*" "\\1.\\2.\\3" RP_ZSTD_VERSION "${_v}")
if(RP_ZSTD_VERSION VERSION_LESS 1.4.0)
  message(FATAL_ERROR "ringpress: zstd >= 1.4.0 is required (found ${RP_ZSTD_VERSION}); upgrade libzstd-dev.")
endif()
