#pragma once
// The test files' one include of Catch. c10 defines an aborting CHECK macro of its own; included
// after Catch it would replace Catch's CHECK (a failed check then kills the binary, uncounted), so
// torch comes first and Catch's definitions win.
#include <torch/torch.h>

#include <catch2/catch.hpp>
