// load_checkpoint: read the whole checkpoint into a flat {dotted name: tensor} map, check it
// against the module tree, and only then copy, so that a bad checkpoint leaves the module as it
// was. The rules are those of Python's torchqat.load_state_dict.
#include "torchqat/checkpoint.h"

#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/read_adapter_interface.h>
#include <torch/csrc/jit/serialization/import_read.h>
#include <torch/serialize/input-archive.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <istream>
#include <iterator>
#include <map>
#include <vector>

#include "nn/checkpoint_bounds.h"
#include "torchqat/tensor_quantizer.h"

namespace torchqat {
namespace {

using torch::nn::Module;
using TensorMap = std::map<std::string, at::Tensor>;  // ordered: errors list keys stably

// The first line of an exception's message (c10's without its backtrace).
std::string first_line(const std::exception& e) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  const std::string s = c10_error ? c10_error->what_without_backtrace() : e.what();
  const size_t start = s.find_first_not_of(" \n");
  if (start == std::string::npos) return {};
  return s.substr(start, std::min<size_t>(s.find('\n', start) - start, 300));
}

void flatten_archive(torch::serialize::InputArchive& archive, const std::string& prefix, TensorMap& out) {
  for (const auto& key : archive.keys()) {
    c10::IValue v;
    if (!archive.try_read(key, v)) continue;
    if (v.isTensor()) {
      out[prefix + key] = v.toTensor();
    } else if (v.isObject()) {  // a submodule's archive
      torch::serialize::InputArchive child;
      archive.read(key, child);
      flatten_archive(child, prefix + key + ".", out);
    }
  }
}

// Reads within the bytes only. torch's in-memory readers (behind torch::pickle_load) copy
// whatever range a zip directory names, so a corrupted one reads past the buffer.
class BoundedReader final : public caffe2::serialize::ReadAdapterInterface {
 public:
  explicit BoundedReader(const std::vector<char>& bytes) : bytes_(bytes) {}
  size_t size() const override { return bytes_.size(); }
  size_t read(uint64_t pos, void* buf, size_t n, const char* /*what*/) const override {
    if (pos >= bytes_.size()) return 0;
    const size_t k = static_cast<size_t>(std::min<uint64_t>(n, bytes_.size() - pos));
    std::memcpy(buf, bytes_.data() + pos, k);
    return k;
  }

 private:
  const std::vector<char>& bytes_;
};

TensorMap from_pickled_dict(const std::vector<char>& bytes, const std::string& source) {
  caffe2::serialize::PyTorchStreamReader reader(std::make_shared<BoundedReader>(bytes));
  const c10::IValue v = torch::jit::readArchiveAndTensors("data", "", "", std::nullopt, std::nullopt,
                                                          at::Device(at::kCPU), reader);
  // Python's OrderedDict state dicts unpickle as None here: torch's C++ unpickler cannot build them.
  TORCH_CHECK(v.isGenericDict(), "torchqat::load_checkpoint: ", source, " holds a ", v.tagKind(),
              ", not a module archive or a dict of tensors; from Python, save torch.save(dict(model.state_dict()), "
              "path)");
  TensorMap out;
  for (const auto& e : v.toGenericDict()) {
    TORCH_CHECK(e.key().isString() && e.value().isTensor(), "torchqat::load_checkpoint: ", source,
                " holds an entry that is not a name and a tensor (", e.key().tagKind(), " -> ", e.value().tagKind(), ")");
    out[e.key().toStringRef()] = e.value().toTensor();
  }
  return out;
}

// torch::save's module archive, else a pickled dict; both are zip files, checked to be in bounds
// first (which also refuses what is not a zip file).
// A corrupted size, stride or offset in a pickle makes a tensor that reaches past its storage:
// torch builds it without complaint and the copy into the model then reads out of bounds.
void check_storage_fits(const TensorMap& tensors, const std::string& source) {
  for (const auto& [key, t] : tensors) {
    if (!t.defined() || t.numel() == 0) continue;
    bool ok = t.storage_offset() >= 0;
    int64_t last = t.storage_offset();
    for (int64_t d = 0; ok && d < t.dim(); ++d) {
      ok = t.stride(d) >= 0 && (t.size(d) - 1) <= (INT64_MAX - last) / std::max<int64_t>(t.stride(d), 1);
      if (ok) last += (t.size(d) - 1) * t.stride(d);
    }
    const auto item = static_cast<int64_t>(t.element_size());
    ok = ok && last < INT64_MAX / item && (last + 1) * item <= static_cast<int64_t>(t.storage().nbytes());
    TORCH_CHECK(ok, "torchqat::load_checkpoint: cannot read ", source, ": the file is truncated or corrupted (",
                key, " of shape ", t.sizes(), " reaches past its storage of ", t.storage().nbytes(), " bytes)");
  }
}

TensorMap read_checkpoint_unchecked(const std::vector<char>& bytes, const std::string& source);

TensorMap read_checkpoint(const std::vector<char>& bytes, const std::string& source) {
  TensorMap out = read_checkpoint_unchecked(bytes, source);
  check_storage_fits(out, source);
  return out;
}

TensorMap read_checkpoint_unchecked(const std::vector<char>& bytes, const std::string& source) {
  detail::check_checkpoint_bounds(bytes, source);
  std::string archive_error;
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(bytes.data(), bytes.size(), at::Device(at::kCPU));  // a bounds-checked reader
    TensorMap out;
    flatten_archive(archive, "", out);
    return out;
  } catch (const std::exception& e) {  // a corrupted archive also raises torch::jit's own errors
    archive_error = first_line(e);
  }
  try {
    return from_pickled_dict(bytes, source);
  } catch (const std::exception& e) {
    if (first_line(e).rfind("torchqat::", 0) == 0) throw;
    C10_THROW_ERROR(Error, c10::str("torchqat::load_checkpoint: cannot read ", source,
                                    ": the file is truncated or corrupted, or was not written by torch::save or "
                                    "torch.save (",
                                    archive_error, ")"));
  }
}

// A quantizer without amax: loading registers the checkpoint's. weight: the parent layer's weight
// when the quantizer is its weight quantizer, for the per-channel shape rule.
struct AmaxSlot {
  TensorQuantizerImpl* quantizer;
  at::Tensor weight;
};

struct ModuleTensors {
  TensorMap tensors;                      // parameters and buffers, by dotted name
  std::map<std::string, AmaxSlot> slots;  // "<quantizer>._amax" of quantizers without amax
};

void collect(Module& m, const std::string& prefix, const at::Tensor& parent_weight, ModuleTensors& out) {
  for (const auto& p : m.named_parameters(/*recurse=*/false)) out.tensors[prefix + p.key()] = p.value();
  for (const auto& b : m.named_buffers(/*recurse=*/false)) out.tensors[prefix + b.key()] = b.value();
  if (auto* q = dynamic_cast<TensorQuantizerImpl*>(&m); q != nullptr && !q->has_amax()) {
    out.slots[prefix + "_amax"] = {q, parent_weight};
  }
  const auto own = m.named_parameters(/*recurse=*/false);
  const at::Tensor* weight = own.find("weight");
  for (const auto& c : m.named_children()) {
    const bool weight_quantizer = c.key() == "_weight_quantizer" && weight != nullptr;
    collect(*c.value(), prefix + c.key() + ".", weight_quantizer ? *weight : at::Tensor(), out);
  }
}

bool is_amax_key(const std::string& key) {
  static const std::string kSuffix = "._amax";
  return key == "_amax" ||
         (key.size() > kSuffix.size() && key.compare(key.size() - kSuffix.size(), kSuffix.size(), kSuffix) == 0);
}

std::string first_values(const at::Tensor& v) {
  const at::Tensor f = v.detach().reshape({-1}).slice(0, 0, 8).to(at::kDouble).contiguous();
  std::string s = "[";
  for (int64_t i = 0; i < f.numel(); ++i) s += (i ? ", " : "") + c10::str(f.data_ptr<double>()[i]);
  return s + (v.numel() > 8 ? ", ...]" : "]");
}

// An error string, or empty when the amax values are valid.
std::string check_amax_values(const std::string& key, const at::Tensor& v) {
  if (!at::isFloatingType(v.scalar_type()) || v.numel() == 0) {
    return c10::str(key, ": amax must be a non-empty float tensor, got ", v.scalar_type(), " of shape ", v.sizes());
  }
  const at::Tensor d = v.detach().to(at::kDouble);
  if (!at::isfinite(d).all().item<bool>() || d.min().item<double>() < 0.0) {
    return c10::str(key, ": amax must be finite and >= 0, got ", first_values(v));
  }
  return {};
}

// The shape rule for an amax a quantizer does not have yet; empty when it fits.
std::string check_new_amax(const std::string& key, const at::Tensor& v, const AmaxSlot& slot) {
  const auto& axis = slot.quantizer->desc().axis();
  if (!axis) {
    return v.numel() == 1 ? std::string()
                          : c10::str(key, ": a per-tensor quantizer takes 1 amax value, got shape ", v.sizes());
  }
  if (!slot.weight.defined() || v.numel() == 1) return {};  // an input quantizer: its input's shape is unknown here
  const at::Tensor& w = slot.weight;
  std::vector<int64_t> keepdim(w.dim(), 1);
  int64_t k = 1;
  for (int64_t a : *axis) {
    const int64_t d = ((a % w.dim()) + w.dim()) % w.dim();
    keepdim[d] = w.size(d);
  }
  for (int64_t s : keepdim) k *= s;
  if (v.numel() == k && ((axis->size() == 1 && v.dim() == 1) || v.sizes() == at::IntArrayRef(keepdim))) return {};
  return c10::str(key, ": amax of shape ", v.sizes(), " does not fit the weight of shape ", w.sizes(), " along axis ",
                  *axis, " (expected 1 value or ", k, ", shaped ", at::IntArrayRef(keepdim), ")");
}

std::string join_keys(const std::vector<std::string>& keys) {
  std::string s = "[";
  for (size_t i = 0; i < keys.size(); ++i) s += (i ? ", " : "") + keys[i];
  return s + "]";
}

std::vector<std::string> validate(const TensorMap& ckpt, const ModuleTensors& model, bool strict) {
  std::vector<std::string> errors, unexpected, missing;
  for (const auto& [key, value] : ckpt) {
    if (is_amax_key(key)) {
      std::string e = check_amax_values(key, value);
      if (!e.empty()) {
        errors.push_back(std::move(e));
        continue;
      }
    }
    if (auto t = model.tensors.find(key); t != model.tensors.end()) {
      if (value.sizes() != t->second.sizes()) {
        errors.push_back(c10::str(key, ": shape ", value.sizes(), " does not match the model's ", t->second.sizes()));
      }
    } else if (auto s = model.slots.find(key); s != model.slots.end()) {
      std::string e = check_new_amax(key, value, s->second);
      if (!e.empty()) errors.push_back(std::move(e));
    } else {
      unexpected.push_back(key);
    }
  }
  if (strict) {
    for (const auto& [key, t] : model.tensors) {
      if (ckpt.count(key) == 0) missing.push_back(key);
    }
    if (!missing.empty()) errors.push_back("missing keys: " + join_keys(missing));
    if (!unexpected.empty()) errors.push_back("unexpected keys: " + join_keys(unexpected));
  }
  return errors;
}

void load(Module& module, const std::vector<char>& bytes, const std::string& source, bool strict) {
  const TensorMap ckpt = read_checkpoint(bytes, source);
  ModuleTensors model;
  collect(module, "", at::Tensor(), model);
  const auto errors = validate(ckpt, model, strict);
  if (!errors.empty()) {
    std::string list;
    for (const auto& e : errors) list += "\n  " + e;
    TORCH_CHECK(false, "torchqat::load_checkpoint: ", source, " was not loaded; the module is unchanged:", list);
  }
  // A new amax goes where its layer is (a CPU checkpoint into a CUDA model).
  at::Device fallback = model.tensors.empty() ? at::Device(at::kCPU) : model.tensors.begin()->second.device();
  torch::NoGradGuard no_grad;
  for (const auto& [key, value] : ckpt) {
    if (auto t = model.tensors.find(key); t != model.tensors.end()) {
      t->second.copy_(value);
    } else if (auto s = model.slots.find(key); s != model.slots.end()) {
      const at::Device d = s->second.weight.defined() ? s->second.weight.device() : fallback;
      s->second.quantizer->set_amax(value.to(d));
    }
  }
}

}  // namespace

void load_checkpoint(Module& module, const std::string& path, bool strict) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in.good(), "torchqat::load_checkpoint: cannot open checkpoint '", path, "': ", std::strerror(errno));
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  load(module, bytes, "checkpoint '" + path + "'", strict);
}

void load_checkpoint(Module& module, std::istream& stream, bool strict) {
  const std::vector<char> bytes((std::istreambuf_iterator<char>(stream)), std::istreambuf_iterator<char>());
  load(module, bytes, "checkpoint stream", strict);
}

}  // namespace torchqat
