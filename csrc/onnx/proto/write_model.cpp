// Model -> onnx::ModelProto (libonnx-dev's generated classes) -> file. The only file that
// includes protobuf headers; it is built without torch's include directories (see
// onnx_model.h and CMakeLists.txt).
#include <onnx/onnx_pb.h>

#include <fstream>
#include <stdexcept>
#include <type_traits>

#include "onnx/proto/onnx_model.h"

namespace torchqat::onnx::detail {
namespace {

void fill_attribute(const Attribute& a, ::onnx::AttributeProto* out) {
  out->set_name(a.name);
  std::visit(
      [out](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, int64_t>) {
          out->set_type(::onnx::AttributeProto::INT);
          out->set_i(v);
        } else if constexpr (std::is_same_v<T, float>) {
          out->set_type(::onnx::AttributeProto::FLOAT);
          out->set_f(v);
        } else if constexpr (std::is_same_v<T, std::string>) {
          out->set_type(::onnx::AttributeProto::STRING);
          out->set_s(v);
        } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
          out->set_type(::onnx::AttributeProto::INTS);
          for (int64_t x : v) out->add_ints(x);
        } else {
          out->set_type(::onnx::AttributeProto::FLOATS);
          for (float x : v) out->add_floats(x);
        }
      },
      a.value);
}

void fill_value_info(const ValueInfo& v, ::onnx::ValueInfoProto* out) {
  out->set_name(v.name);
  auto* tensor_type = out->mutable_type()->mutable_tensor_type();
  tensor_type->set_elem_type(static_cast<int32_t>(v.dtype));
  auto* shape = tensor_type->mutable_shape();
  for (const auto& d : v.shape) {
    auto* dim = shape->add_dim();
    if (std::holds_alternative<int64_t>(d)) {
      dim->set_dim_value(std::get<int64_t>(d));
    } else {
      dim->set_dim_param(std::get<std::string>(d));
    }
  }
}

}  // namespace

void write_model(const Model& model, const std::string& path) {
  ::onnx::ModelProto proto;
  proto.set_ir_version(model.ir_version);
  proto.set_producer_name(model.producer_name);
  proto.set_producer_version(model.producer_version);
  auto* opset = proto.add_opset_import();
  opset->set_domain("");
  opset->set_version(model.opset_version);

  auto* graph = proto.mutable_graph();
  graph->set_name(model.graph_name);
  for (const auto& n : model.nodes) {
    auto* node = graph->add_node();
    node->set_op_type(n.op_type);
    node->set_name(n.name);
    for (const auto& i : n.inputs) node->add_input(i);
    for (const auto& o : n.outputs) node->add_output(o);
    for (const auto& a : n.attributes) fill_attribute(a, node->add_attribute());
  }
  for (const auto& t : model.initializers) {
    auto* init = graph->add_initializer();
    init->set_name(t.name);
    init->set_data_type(static_cast<int32_t>(t.dtype));
    for (int64_t d : t.dims) init->add_dims(d);
    init->set_raw_data(t.raw_data);
  }
  for (const auto& v : model.inputs) fill_value_info(v, graph->add_input());
  for (const auto& v : model.outputs) fill_value_info(v, graph->add_output());

  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file) throw std::runtime_error("cannot open '" + path + "' for writing");
  if (!proto.SerializeToOstream(&file)) throw std::runtime_error("cannot serialize the ONNX model to '" + path + "'");
  file.close();
  if (!file) throw std::runtime_error("cannot write '" + path + "'");
}

}  // namespace torchqat::onnx::detail
