#pragma once
// A bounds check of a checkpoint's bytes before torch reads them. torch's zip reader and
// unpickler trust the sizes and indices a file states: a corrupted length or memo index makes
// them allocate gigabytes or more (found by corrupting checkpoints under ASan). So every zip
// entry must lie within the file, and every pickle in it must state only lengths that fit in
// the pickle and memo indices it has defined.
#include <string>
#include <vector>

namespace torchqat::detail {

// Throws c10::Error naming source and the first problem; returns when the bytes are in bounds.
void check_checkpoint_bounds(const std::vector<char>& bytes, const std::string& source);

}  // namespace torchqat::detail
