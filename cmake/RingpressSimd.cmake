# SIMD: per-file ISA flags, never a global -march.
#
# Each ISA kernel lives in its own translation unit compiled with that ISA's flags; a dispatch
# table chosen once at run time from cpuid (csrc/common/cpu.cc) picks the best kernel the CPU and
# OS support, with a generic fallback. The rest of the library is compiled for the baseline ISA,
# so a wheel never executes an instruction the CPU lacks.
include_guard(GLOBAL)

set(RP_X86 OFF)
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64|i.86)$")
  set(RP_X86 ON)
endif()

set(RP_ISA_FLAGS_SSE2   "-msse2")
set(RP_ISA_FLAGS_AVX2   "-mavx2;-mbmi2")
set(RP_ISA_FLAGS_AVX512 "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mbmi2")

set(RINGPRESS_HAVE_SSE2 0)
set(RINGPRESS_HAVE_AVX2 0)
set(RINGPRESS_HAVE_AVX512 0)
set(RP_BUILT_ISAS "generic")
if(RP_X86 AND RINGPRESS_SIMD)
  include(CheckCXXCompilerFlag)
  foreach(isa SSE2 AVX2 AVX512)
    string(REPLACE ";" " " _flags "${RP_ISA_FLAGS_${isa}}")
    set(CMAKE_REQUIRED_FLAGS "${_flags}")
    check_cxx_compiler_flag("${_flags}" RP_COMPILER_HAS_${isa})
    unset(CMAKE_REQUIRED_FLAGS)
    if(RP_COMPILER_HAS_${isa})
      set(RINGPRESS_HAVE_${isa} 1)
      string(TOLOWER "${isa}" _lower)
      list(APPEND RP_BUILT_ISAS ${_lower})
    endif()
  endforeach()
endif()

# rp_add_isa_sources(<list-var> ISA file [ISA file ...]): append each file built for its ISA.
function(rp_add_isa_sources out_var)
  set(_srcs ${${out_var}})
  set(_args ${ARGN})
  list(LENGTH _args _n)
  math(EXPR _last "${_n} - 1")
  foreach(_i RANGE 0 ${_last} 2)
    math(EXPR _j "${_i} + 1")
    list(GET _args ${_i} _isa)
    list(GET _args ${_j} _file)
    if(RINGPRESS_HAVE_${_isa})
      list(APPEND _srcs ${_file})
      set_source_files_properties(${_file} PROPERTIES COMPILE_OPTIONS "${RP_ISA_FLAGS_${_isa}}")
    endif()
  endforeach()
  set(${out_var} ${_srcs} PARENT_SCOPE)
endfunction()

# rp_add_isa_copies(<list-var> <source> ISAS <ISA...> [FLAGS <flag...>]): compile one source once
# per ISA (GENERIC: baseline flags) in its own namespace. Each copy is a generated file that
# defines RP_ISA_NS (generic | sse2 | avx2 | avx512) and #includes <source>; the source wraps its
# kernels in `namespace ... ::RP_ISA_NS` and a dispatch file picks one copy at run time.
function(rp_add_isa_copies out_var src)
  cmake_parse_arguments(C "" "" "ISAS;FLAGS" ${ARGN})
  set(_srcs ${${out_var}})
  get_filename_component(_stem "${src}" NAME_WE)
  get_filename_component(_abs "${src}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
  foreach(_isa ${C_ISAS})
    if(_isa STREQUAL "GENERIC" OR RINGPRESS_HAVE_${_isa})
      string(TOLOWER "${_isa}" _lower)
      set(_copy "${CMAKE_CURRENT_BINARY_DIR}/generated/${_stem}_${_lower}.cc")
      file(WRITE "${_copy}.in" "#define RP_ISA_NS ${_lower}\n#include \"${_abs}\"\n")
      configure_file("${_copy}.in" "${_copy}" COPYONLY)
      list(APPEND _srcs "${_copy}")
      if(_isa STREQUAL "GENERIC")
        set(_opts ${C_FLAGS})
        list(FILTER _opts EXCLUDE REGEX "^-m")  # the generic copy gets no ISA flags
      else()
        set(_opts ${RP_ISA_FLAGS_${_isa}} ${C_FLAGS})
      endif()
      set_source_files_properties("${_copy}" PROPERTIES COMPILE_OPTIONS "${_opts}")
    endif()
  endforeach()
  set(${out_var} ${_srcs} PARENT_SCOPE)
endfunction()
