// Output hooks: a process-wide table module -> hooks, filled by add_output_hook and read by the
// quantized modules' forward (notify_output) and by the Sequential entry wrappers.
#include "nn/output_hooks.h"

#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/container/sequential.h>

#include <mutex>
#include <unordered_map>
#include <utility>

#include "torchqat/nn/quant_lstm.h"
#include "torchqat/nn/quant_mixin.h"

namespace torchqat::nn::detail {

std::atomic<int64_t> g_output_hook_count{0};

namespace {

using torch::nn::AnyModule;
using torch::nn::Module;
using torch::nn::SequentialImpl;

// Stands in a Sequential's entry for a hooked item: runs it, then reports its output under its name.
class OutputTapImpl : public Module {
 public:
  OutputTapImpl(AnyModule inner, const Module* owner) : Module("OutputTap"), inner_(std::move(inner)), owner_(owner) {}
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor y = inner_.forward(x);
    call_output_hooks(*owner_, {y});
    return y;
  }
  const Module* owner() const { return owner_; }

 private:
  AnyModule inner_;
  const Module* owner_;
};

struct Site {
  std::shared_ptr<SequentialImpl> seq;
  size_t index;
  AnyModule original;
};

struct Wrapped {
  std::vector<Site> sites;
  int64_t users = 0;
};

struct Registry {
  std::mutex mutex;
  int64_t next_id = 1;
  std::unordered_map<const Module*, std::vector<std::pair<int64_t, OutputHook>>> hooks;
  std::unordered_map<const Module*, Wrapped> wrapped;
};

Registry& registry() {
  static Registry* r = new Registry();  // never destroyed: handles may outlive static destruction order
  return *r;
}

bool reports_itself(const Module& m) {
  return dynamic_cast<const QuantInputMixin*>(&m) != nullptr || dynamic_cast<const QuantLSTMImpl*>(&m) != nullptr ||
         dynamic_cast<const TensorQuantizerImpl*>(&m) != nullptr;
}

// The module held by a Sequential entry, seen through a tap already in it.
const Module* entry_module(const AnyModule& any) {
  const Module* m = any.ptr().get();
  if (const auto* tap = dynamic_cast<const OutputTapImpl*>(m)) return tap->owner();
  return m;
}

// The Sequential entries of root holding m.
std::vector<std::pair<std::shared_ptr<SequentialImpl>, size_t>> entries_of(Module& root, const Module* m) {
  std::vector<std::pair<std::shared_ptr<SequentialImpl>, size_t>> found;
  for (const auto& sub : root.modules(/*include_self=*/true)) {
    auto seq = std::dynamic_pointer_cast<SequentialImpl>(sub);
    if (!seq) continue;
    size_t i = 0;
    for (const auto& any : *seq) {
      if (entry_module(any) == m) found.emplace_back(seq, i);
      ++i;
    }
  }
  return found;
}

std::shared_ptr<Module> find_module(Module& root, const std::string& name, const char* what) {
  for (const auto& item : root.named_modules(/*name_prefix=*/"", /*include_self=*/true)) {
    if (item.key() == name) return item.value();
  }
  TORCH_CHECK_VALUE(false, what, ": the model has no module named '", name, "'");
  return nullptr;
}

// The module whose reported output is `m`'s output, and whether its Sequential entries must be
// wrapped; null when C++ cannot observe m.
std::pair<std::shared_ptr<Module>, bool> observed(Module& root, const std::shared_ptr<Module>& m) {
  if (reports_itself(*m)) return {m, false};
  if (!entries_of(root, m.get()).empty()) return {m, true};
  if (auto seq = std::dynamic_pointer_cast<SequentialImpl>(m); seq && !seq->is_empty()) {
    return observed(root, seq->children().back());
  }
  return {nullptr, false};
}

}  // namespace

void call_output_hooks(const Module& module, const std::vector<at::Tensor>& outputs) {
  std::vector<OutputHook> todo;
  {
    auto& r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    auto it = r.hooks.find(&module);
    if (it == r.hooks.end()) return;
    for (const auto& h : it->second) todo.push_back(h.second);
  }
  for (const auto& h : todo) h(outputs);  // outside the lock: a hook may run modules itself
}

struct OutputHookHandle::State {
  std::shared_ptr<Module> target;  // kept alive, so its address is not reused while hooked
  int64_t id;
  bool wrapped;
};

OutputHookHandle::OutputHookHandle() = default;
OutputHookHandle::~OutputHookHandle() { remove(); }

OutputHookHandle::OutputHookHandle(OutputHookHandle&& other) noexcept : state_(std::move(other.state_)) {}

OutputHookHandle& OutputHookHandle::operator=(OutputHookHandle&& other) noexcept {
  if (this != &other) {
    remove();
    state_ = std::move(other.state_);
  }
  return *this;
}

void OutputHookHandle::remove() {
  if (!state_) return;
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  const Module* key = state_->target.get();
  auto& list = r.hooks[key];
  for (auto it = list.begin(); it != list.end(); ++it) {
    if (it->first == state_->id) {
      list.erase(it);
      break;
    }
  }
  if (list.empty()) r.hooks.erase(key);
  if (state_->wrapped) {
    auto w = r.wrapped.find(key);
    if (w != r.wrapped.end() && --w->second.users == 0) {
      for (auto& site : w->second.sites) {
        auto entry = site.seq->begin() + static_cast<std::ptrdiff_t>(site.index);
        if (site.index < site.seq->size() && dynamic_cast<const OutputTapImpl*>(entry->ptr().get())) {
          *entry = site.original;
        }
      }
      r.wrapped.erase(w);
    }
  }
  g_output_hook_count.fetch_sub(1, std::memory_order_relaxed);
  state_.reset();
}

bool can_hook_output(Module& root, const std::string& name) {
  return observed(root, find_module(root, name, "add_output_hook")).first != nullptr;
}

OutputHookHandle add_output_hook(const std::shared_ptr<Module>& root, const std::string& name, OutputHook hook) {
  TORCH_CHECK_VALUE(root != nullptr, "add_output_hook: the model is null");
  const auto m = find_module(*root, name, "add_output_hook");
  auto [target, wrap] = observed(*root, m);
  TORCH_CHECK_VALUE(target != nullptr, "the output of module '", name, "' (", m->name(),
                    ") cannot be observed from C++: LibTorch has no forward hooks, so only torchqat's quantized "
                    "modules, items of a torch::nn::Sequential (one tensor in, one out) and Sequentials can be");
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  OutputHookHandle handle;
  handle.state_ = std::make_unique<OutputHookHandle::State>(OutputHookHandle::State{target, r.next_id++, wrap});
  r.hooks[target.get()].emplace_back(handle.state_->id, std::move(hook));
  if (wrap) {
    auto& w = r.wrapped[target.get()];
    if (w.users++ == 0) {
      for (auto& [seq, index] : entries_of(*root, target.get())) {
        auto entry = seq->begin() + static_cast<std::ptrdiff_t>(index);
        w.sites.push_back({seq, index, *entry});
        *entry = AnyModule(std::make_shared<OutputTapImpl>(*entry, target.get()));
      }
    }
  }
  g_output_hook_count.fetch_add(1, std::memory_order_relaxed);
  return handle;
}

}  // namespace torchqat::nn::detail
