# Options of the ringpress build, and a check that rejects misspelled or unknown ones.
#
# A typo such as -DRINGPRESS_CUDE=ON would otherwise be silently ignored by CMake; ringpress
# fails the configure step instead, listing the valid names (docs/building.md documents them).
include_guard(GLOBAL)

set(RINGPRESS_CUDA "AUTO" CACHE STRING "Build CUDA kernels: AUTO (when nvcc is found), ON (required), OFF")
set_property(CACHE RINGPRESS_CUDA PROPERTY STRINGS AUTO ON OFF)
set(RINGPRESS_CUDA_ARCHITECTURES "80;90" CACHE STRING "CUDA architectures to compile for")
option(RINGPRESS_PYTHON "Build the pybind11 extension ringpress._core" OFF)
set(RINGPRESS_TORCH "AUTO" CACHE STRING "Build the torch.distributed backend ringpress._c10d (needs RINGPRESS_PYTHON): AUTO (when the Python imports torch), ON (required), OFF")
set_property(CACHE RINGPRESS_TORCH PROPERTY STRINGS AUTO ON OFF)
option(RINGPRESS_BUILD_TESTS "Build the C++ tests (GoogleTest) and register them with ctest" OFF)
option(RINGPRESS_SIMD "Build the SSE2/AVX2/AVX-512 kernels (runtime dispatch keeps a generic fallback)" ON)
option(RINGPRESS_WERROR "Treat compiler warnings as errors" OFF)
set(RINGPRESS_SANITIZE "" CACHE STRING "Sanitizers: empty, 'address,undefined' or 'thread'")
option(RINGPRESS_FUZZ "Build the libFuzzer targets in tests/fuzz (clang only; scripts/fuzz.sh)" OFF)

set(_rp_known_options
  RINGPRESS_CUDA RINGPRESS_CUDA_ARCHITECTURES RINGPRESS_PYTHON RINGPRESS_TORCH RINGPRESS_BUILD_TESTS
  RINGPRESS_SIMD RINGPRESS_WERROR RINGPRESS_SANITIZE RINGPRESS_FUZZ)

get_cmake_property(_rp_cache_vars CACHE_VARIABLES)
foreach(_var IN LISTS _rp_cache_vars)
  if(_var MATCHES "^RINGPRESS_" AND NOT _var IN_LIST _rp_known_options)
    string(REPLACE ";" ", " _rp_known_pretty "${_rp_known_options}")
    message(FATAL_ERROR
      "ringpress: unknown build option '${_var}'.\n"
      "Valid options: ${_rp_known_pretty} (see docs/building.md).")
  endif()
endforeach()

string(TOUPPER "${RINGPRESS_CUDA}" RINGPRESS_CUDA)
if(NOT RINGPRESS_CUDA MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "ringpress: RINGPRESS_CUDA must be AUTO, ON or OFF (got '${RINGPRESS_CUDA}').")
endif()
string(TOUPPER "${RINGPRESS_TORCH}" RINGPRESS_TORCH)
if(NOT RINGPRESS_TORCH MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "ringpress: RINGPRESS_TORCH must be AUTO, ON or OFF (got '${RINGPRESS_TORCH}').")
endif()
if(NOT RINGPRESS_SANITIZE MATCHES "^(|address|undefined|address,undefined|thread)$")
  message(FATAL_ERROR "ringpress: RINGPRESS_SANITIZE must be empty, 'address', 'undefined', "
                      "'address,undefined' or 'thread' (got '${RINGPRESS_SANITIZE}').")
endif()

find_package(Threads REQUIRED)

# Sanitized code is built at -O1 with line tables only (-g1), whatever the build type, as the
# sanitizers' documentation suggests: reports keep file:line stacks, and the compile takes a third
# of -O2 -g's time (the largest test file, gcc 12 with ASan+UBSan: 10 against 28 s), which is what
# bounds CI's background sanitizer builds (scripts/test.sh).
function(rp_apply_sanitizers target)
  if(RINGPRESS_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=${RINGPRESS_SANITIZE} -fno-omit-frame-pointer -O1 -g1)
    target_link_options(${target} PRIVATE -fsanitize=${RINGPRESS_SANITIZE})
  endif()
endfunction()
