#pragma once
// The ONNX model the exporter builds, as plain C++ values. It includes neither torch nor
// protobuf on purpose: the files that fill it see torch's headers, the one that serializes it
// sees protobuf's, and the two never meet in one translation unit (torch's include directory
// ships its own, older protobuf headers, while libonnx-dev is generated for the system
// protobuf).
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace torchqat::onnx::detail {

// The onnx.TensorProto.DataType values the exporter writes.
enum class DataType : int32_t {
  kFloat = 1,
  kUInt8 = 2,
  kInt8 = 3,
  kInt64 = 7,
  kFloat8E4M3FN = 17,
  kUInt4 = 21,  // two elements per byte, the first in the low nibble (opset 21)
  kInt4 = 22,
};

struct OnnxTensor {
  std::string name;
  DataType dtype = DataType::kFloat;
  std::vector<int64_t> dims;
  std::string raw_data;  // row-major, little-endian; 4-bit types packed two per byte
};

struct Attribute {
  std::string name;
  std::variant<int64_t, float, std::string, std::vector<int64_t>, std::vector<float>> value;
};

struct OnnxNode {
  std::string op_type;
  std::string name;
  std::vector<std::string> inputs;  // "" for an omitted optional input
  std::vector<std::string> outputs;
  std::vector<Attribute> attributes;
};

// A graph input or output; each dim is a size or a symbolic name ("batch").
struct ValueInfo {
  std::string name;
  DataType dtype = DataType::kFloat;
  std::vector<std::variant<int64_t, std::string>> shape;
};

struct Model {
  int64_t ir_version = 7;
  int64_t opset_version = 13;
  std::string producer_name;
  std::string producer_version;
  std::string graph_name;
  std::vector<OnnxNode> nodes;
  std::vector<OnnxTensor> initializers;
  std::vector<ValueInfo> inputs;
  std::vector<ValueInfo> outputs;
};

// Serializes model as an onnx.ModelProto into path. Throws std::runtime_error naming the path
// when it cannot be written.
void write_model(const Model& model, const std::string& path);

}  // namespace torchqat::onnx::detail
