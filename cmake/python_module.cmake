# torchqat._C: pybind11 bindings of the C++ classes (no logic). It links libtorchqat and
# torch's Python bindings, whose pybind11 type casters convert tensors.
find_package(pybind11 CONFIG QUIET)
if(NOT pybind11_FOUND)
  execute_process(COMMAND ${Python3_EXECUTABLE} -c "import pybind11; print(pybind11.get_cmake_dir())"
                  OUTPUT_VARIABLE _pb_dir OUTPUT_STRIP_TRAILING_WHITESPACE)
  find_package(pybind11 CONFIG REQUIRED HINTS "${_pb_dir}")
endif()
file(GLOB TORCHQAT_PY_SOURCES CONFIGURE_DEPENDS csrc/python/*.cpp)
add_library(torchqat_python MODULE ${TORCHQAT_PY_SOURCES})
target_link_libraries(torchqat_python PRIVATE pybind11::headers Python3::Module)
execute_process(COMMAND ${Python3_EXECUTABLE} -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))"
                OUTPUT_VARIABLE _ext_suffix OUTPUT_STRIP_TRAILING_WHITESPACE)
# RPATH: $ORIGIN (build tree), $ORIGIN/lib (the installed package's prefix), torch beside it.
set_target_properties(torchqat_python PROPERTIES OUTPUT_NAME _C PREFIX "" SUFFIX "${_ext_suffix}"
  CXX_VISIBILITY_PRESET hidden
  INSTALL_RPATH "$ORIGIN;$ORIGIN/lib;$ORIGIN/../torch/lib;${_torch_lib_dir}" BUILD_WITH_INSTALL_RPATH ON)
find_library(TORCH_PYTHON_LIBRARY torch_python PATHS "${TORCH_INSTALL_PREFIX}/lib" REQUIRED)
target_link_libraries(torchqat_python PRIVATE torchqat ${TORCH_PYTHON_LIBRARY})
target_include_directories(torchqat_python PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/csrc)
# torch's headers define this ABI tag; pybind11 modules of one process must agree on it.
target_compile_definitions(torchqat_python PRIVATE TORCH_EXTENSION_NAME=_C)
torchqat_precompile(torchqat_python "<torch/extension.h>")
