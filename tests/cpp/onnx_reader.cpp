#include "onnx_reader.h"

#include <onnx/onnx_pb.h>

#include <fstream>
#include <stdexcept>

namespace torchqat_test {

using namespace torchqat::onnx::detail;

namespace {

Attribute read_attribute(const ::onnx::AttributeProto& a) {
  switch (a.type()) {
    case ::onnx::AttributeProto::INT: return {a.name(), static_cast<int64_t>(a.i())};
    case ::onnx::AttributeProto::FLOAT: return {a.name(), a.f()};
    case ::onnx::AttributeProto::STRING: return {a.name(), a.s()};
    case ::onnx::AttributeProto::INTS: return {a.name(), std::vector<int64_t>(a.ints().begin(), a.ints().end())};
    case ::onnx::AttributeProto::FLOATS: return {a.name(), std::vector<float>(a.floats().begin(), a.floats().end())};
    default: throw std::runtime_error("attribute " + a.name() + " has a type the tests do not read");
  }
}

ValueInfo read_value_info(const ::onnx::ValueInfoProto& v) {
  ValueInfo info{v.name(), static_cast<DataType>(v.type().tensor_type().elem_type()), {}};
  for (const auto& d : v.type().tensor_type().shape().dim()) {
    if (d.has_dim_param()) {
      info.shape.emplace_back(d.dim_param());
    } else {
      info.shape.emplace_back(static_cast<int64_t>(d.dim_value()));
    }
  }
  return info;
}

}  // namespace

Model read_onnx(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error("cannot open " + path);
  ::onnx::ModelProto proto;
  if (!proto.ParseFromIstream(&file)) throw std::runtime_error("cannot parse " + path + " as an ONNX model");

  Model m;
  m.ir_version = proto.ir_version();
  m.opset_version = proto.opset_import_size() > 0 ? proto.opset_import(0).version() : 0;
  m.producer_name = proto.producer_name();
  m.producer_version = proto.producer_version();
  const auto& g = proto.graph();
  m.graph_name = g.name();
  for (const auto& n : g.node()) {
    OnnxNode node{n.op_type(), n.name(), {n.input().begin(), n.input().end()}, {n.output().begin(), n.output().end()}, {}};
    for (const auto& a : n.attribute()) node.attributes.push_back(read_attribute(a));
    m.nodes.push_back(std::move(node));
  }
  for (const auto& t : g.initializer()) {
    if (!t.has_raw_data()) throw std::runtime_error("initializer " + t.name() + " has no raw_data");
    m.initializers.push_back({t.name(), static_cast<DataType>(t.data_type()), {t.dims().begin(), t.dims().end()},
                              t.raw_data()});
  }
  for (const auto& v : g.input()) m.inputs.push_back(read_value_info(v));
  for (const auto& v : g.output()) m.outputs.push_back(read_value_info(v));
  return m;
}

}  // namespace torchqat_test
