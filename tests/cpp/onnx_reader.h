#pragma once
// Reads an ONNX file back for the tests, through onnx::ModelProto::ParseFromIstream. Built
// without torch's include directory (which carries other protobuf headers), so it hands back
// the exporter's plain model structs.
#include <string>

#include "onnx/proto/onnx_model.h"

namespace torchqat_test {

// Throws std::runtime_error when the file cannot be opened or parsed.
torchqat::onnx::detail::Model read_onnx(const std::string& path);

}  // namespace torchqat_test
