# Layer check: a source or header of one layer may include only headers of its own layer or of
# the layers below it (the order given to rp_check_layers). Runs at configure time, so a
# back-edge fails `cmake` with the offending file, the header and both layers, before anything
# compiles (the per-layer PUBLIC include directories would also fail the compile).
#
#   rp_check_layers(<csrc dir> <lowest layer> ... <highest layer>)
#
# Script mode, for tests and for anyone: cmake -DRP_CSRC=<dir> -DRP_LAYERS="common;kernels;..." -P
# cmake/RingpressLayers.cmake
include_guard(GLOBAL)

function(rp_check_layers csrc)
  get_filename_component(csrc "${csrc}" ABSOLUTE)
  set(_layers ${ARGN})
  # Which layer owns each public header (csrc/<layer>/include/ringpress/<name>.h).
  set(_i 0)
  foreach(_layer ${_layers})
    file(GLOB _hdrs "${csrc}/${_layer}/include/ringpress/*.h")
    foreach(_h ${_hdrs})
      get_filename_component(_name "${_h}" NAME)
      set(_owner_${_name} ${_layer})
      set(_rank_${_name} ${_i})
    endforeach()
    set(_rank_of_${_layer} ${_i})
    math(EXPR _i "${_i} + 1")
  endforeach()
  set(_errors "")
  foreach(_layer ${_layers})
    file(GLOB_RECURSE _files "${csrc}/${_layer}/*.h" "${csrc}/${_layer}/*.cc" "${csrc}/${_layer}/*.cu")
    foreach(_f ${_files})
      file(STRINGS "${_f}" _incs REGEX "^[ \t]*#[ \t]*include[ \t]*\"ringpress/[A-Za-z0-9_]+\\.h\"")
      # A relative include may not leave the layer's directory (another layer's private headers).
      file(STRINGS "${_f}" _rel REGEX "^[ \t]*#[ \t]*include[ \t]*\"[^\"]*\\.\\./[^\"]*\"")
      foreach(_r ${_rel})
        string(REGEX REPLACE ".*\"([^\"]+)\".*" "\\1" _path "${_r}")
        get_filename_component(_dir "${_f}" DIRECTORY)
        get_filename_component(_target "${_dir}/${_path}" ABSOLUTE)
        string(FIND "${_target}" "${csrc}/${_layer}/" _at)
        if(NOT _at EQUAL 0)
          string(APPEND _errors "  ${_f} (layer ${_layer}) includes \"${_path}\" outside its layer's directory\n")
        endif()
      endforeach()
      foreach(_inc ${_incs})
        string(REGEX REPLACE ".*\"ringpress/([A-Za-z0-9_]+\\.h)\".*" "\\1" _name "${_inc}")
        if(_name STREQUAL "config.h")  # generated build switches: every layer may read them
          continue()
        endif()
        if(NOT DEFINED _owner_${_name})
          string(APPEND _errors "  ${_f}: includes ringpress/${_name}, which no layer provides\n")
        elseif(_rank_${_name} GREATER _rank_of_${_layer})
          string(APPEND _errors "  ${_f} (layer ${_layer}) includes ringpress/${_name} of the higher layer ${_owner_${_name}}\n")
        endif()
      endforeach()
    endforeach()
  endforeach()
  if(_errors)
    string(REPLACE ";" " → " _order "${_layers}")
    message(FATAL_ERROR "ringpress: layer violation (dependencies point one way: ${_order}):\n${_errors}")
  endif()
endfunction()

if(CMAKE_SCRIPT_MODE_FILE AND DEFINED RP_CSRC)
  rp_check_layers("${RP_CSRC}" ${RP_LAYERS})
endif()
