# CUDA: RINGPRESS_CUDA=AUTO builds the kernels in csrc/cuda/*.cu when nvcc is found, ON requires
# it, OFF skips it. CI compiles them (no GPU needed) so CUDA code cannot rot silently; the tests
# that run them skip cleanly on machines without a GPU.
include_guard(GLOBAL)

set(RINGPRESS_WITH_CUDA 0)
if(NOT RINGPRESS_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER)
    # nvcc is often installed outside PATH.
    foreach(_cand /usr/local/cuda/bin/nvcc /usr/local/bin/nvcc)
      if(EXISTS ${_cand})
        set(CMAKE_CUDA_COMPILER ${_cand})
        break()
      endif()
    endforeach()
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(CMAKE_CUDA_ARCHITECTURES "${RINGPRESS_CUDA_ARCHITECTURES}")
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(RINGPRESS_WITH_CUDA 1)
  elseif(RINGPRESS_CUDA STREQUAL "ON")
    message(FATAL_ERROR
      "ringpress: RINGPRESS_CUDA=ON but no working CUDA compiler (nvcc) was found.\n"
      "Install the CUDA toolkit, set CUDACXX=/path/to/nvcc, or configure with -DRINGPRESS_CUDA=OFF.")
  else()
    message(STATUS "ringpress: nvcc not found, building without CUDA kernels")
  endif()
endif()
