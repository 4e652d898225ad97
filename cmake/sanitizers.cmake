# TORCHQAT_SANITIZE=ON builds the library and tests with ASan + UBSan (CI runs the C++ tests so).
option(TORCHQAT_SANITIZE "Build with AddressSanitizer and UndefinedBehaviorSanitizer" OFF)
if(TORCHQAT_SANITIZE)
  set(_san -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
  add_compile_options("$<$<COMPILE_LANGUAGE:CXX>:${_san}>")
  add_link_options(-fsanitize=address,undefined)
endif()
