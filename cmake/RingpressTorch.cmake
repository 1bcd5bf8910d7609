# The torch.distributed backend module ringpress._c10d (csrc/torch/): a C++ c10d::Backend built
# against the torch that the build's Python imports (the way the oneCCL and UCC backends are).
#
# RINGPRESS_TORCH=AUTO builds it when that Python can import torch, ON requires it, OFF skips it.
# The module is tied to that torch release: it records torch.__version__ and ringpress.torch
# refuses to load it under another one (then the pure-Python backend runs, and says so once).
#
# It uses torch's own headers (including the pybind11 copy torch ships, so its classes derive
# from torch's c10d.Backend/Work Python types) and links libtorch, libc10 and libtorch_python,
# which `import torch` has already loaded when ringpress.torch imports the module.
include_guard(GLOBAL)

set(RINGPRESS_WITH_TORCH 0)
set(RP_TORCH_VERSION "")
if(RINGPRESS_PYTHON AND NOT RINGPRESS_TORCH STREQUAL "OFF")
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c
      "import torch, torch.utils.cpp_extension as c; print(torch.__version__); print('|'.join(c.include_paths())); print('|'.join(c.library_paths())); print(int(torch._C._GLIBCXX_USE_CXX11_ABI)); print(int(torch.backends.cuda.is_built()))"
    RESULT_VARIABLE _rp_torch_rc
    OUTPUT_VARIABLE _rp_torch_out
    ERROR_VARIABLE _rp_torch_err
    OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(_rp_torch_rc EQUAL 0)
    string(REPLACE "\n" ";" _rp_torch_lines "${_rp_torch_out}")
    list(GET _rp_torch_lines 0 RP_TORCH_VERSION)
    list(GET _rp_torch_lines 1 _rp_torch_inc)
    list(GET _rp_torch_lines 2 _rp_torch_libdir)
    list(GET _rp_torch_lines 3 _rp_torch_abi)
    list(GET _rp_torch_lines 4 _rp_torch_cuda)
    string(REPLACE "|" ";" _rp_torch_inc "${_rp_torch_inc}")
    string(REPLACE "|" ";" _rp_torch_libdir "${_rp_torch_libdir}")
    set(RINGPRESS_WITH_TORCH 1)
  elseif(RINGPRESS_TORCH STREQUAL "ON")
    message(FATAL_ERROR "ringpress: RINGPRESS_TORCH=ON but '${Python_EXECUTABLE}' cannot import torch:\n"
                        "${_rp_torch_err}\nInstall torch (pip install torch==2.13.0) or configure "
                        "with -DRINGPRESS_TORCH=OFF.")
  else()
    message(STATUS "ringpress: torch not importable by ${Python_EXECUTABLE}: building without ringpress._c10d")
  endif()
endif()

function(rp_add_torch_module)
  if(NOT RINGPRESS_WITH_TORCH)
    return()
  endif()
  file(GLOB _srcs CONFIGURE_DEPENDS "${CMAKE_CURRENT_SOURCE_DIR}/csrc/torch/*.cc")
  Python_add_library(_c10d MODULE WITH_SOABI ${_srcs})
  # torch's include directories first: its bundled pybind11 must win over the pip one, so that
  # our classes share torch's pybind11 type registry.
  target_include_directories(_c10d BEFORE PRIVATE ${_rp_torch_inc})
  find_library(RP_LIBTORCH torch PATHS ${_rp_torch_libdir} NO_DEFAULT_PATH REQUIRED)
  find_library(RP_LIBTORCH_CPU torch_cpu PATHS ${_rp_torch_libdir} NO_DEFAULT_PATH REQUIRED)
  find_library(RP_LIBC10 c10 PATHS ${_rp_torch_libdir} NO_DEFAULT_PATH REQUIRED)
  find_library(RP_LIBTORCH_PYTHON torch_python PATHS ${_rp_torch_libdir} NO_DEFAULT_PATH REQUIRED)
  target_link_libraries(_c10d PRIVATE ringpress_core ${RP_LIBTORCH} ${RP_LIBTORCH_CPU} ${RP_LIBC10}
                                      ${RP_LIBTORCH_PYTHON})
  target_compile_definitions(_c10d PRIVATE
    _GLIBCXX_USE_CXX11_ABI=${_rp_torch_abi}
    TORCH_EXTENSION_NAME=_c10d
    RP_TORCH_VERSION="${RP_TORCH_VERSION}"
    RP_TORCH_CUDA=${_rp_torch_cuda})
  target_compile_options(_c10d PRIVATE $<$<CXX_COMPILER_ID:GNU,Clang>:-Wall -Wno-unused-parameter>)
  # libtorch is found at run time because `import torch` loaded it (same soname).
  set_target_properties(_c10d PROPERTIES SKIP_BUILD_RPATH ON INSTALL_RPATH "")
  install(TARGETS _c10d LIBRARY DESTINATION .)
  message(STATUS "ringpress: building ringpress._c10d against torch ${RP_TORCH_VERSION} (cuda ${_rp_torch_cuda})")
endfunction()
