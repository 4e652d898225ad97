// TORCHQAT_MULTIVERSION marks a hot loop to be compiled twice, for x86-64-v3 (AVX2/FMA) and for
// baseline x86-64, picked at load time: the wheel-style build must run on any x86-64 CPU yet
// vectorise 8 floats at a time where it can. g++ only: clang rejects target_clones on
// templates, and its builds here (sanitizers, fuzzer) check correctness, not speed.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define TORCHQAT_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define TORCHQAT_MULTIVERSION
#endif
