# Parsing torch's headers is most of each C++ file's compile time (about 15 of 20-40 s), so every
# target precompiles them once. TORCHQAT_PCH=OFF turns it off (e.g. to check that each file
# includes what it uses).
option(TORCHQAT_PCH "Precompile torch's headers per target (halves the build time)" ON)

# torchqat_precompile(<target> <header>...): headers as "<torch/torch.h>"; C++ sources only, so the
# CUDA files compile as before.
function(torchqat_precompile target)
  if(NOT TORCHQAT_PCH)
    return()
  endif()
  set(_headers)
  foreach(h IN LISTS ARGN)
    string(REPLACE ">" "$<ANGLE-R>" h "${h}")
    list(APPEND _headers "$<$<COMPILE_LANGUAGE:CXX>:${h}>")
  endforeach()
  target_precompile_headers(${target} PRIVATE ${_headers})
endfunction()
