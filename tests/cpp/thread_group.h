#pragma once
// A c10d process group whose ranks are threads of this process (allreduce SUM / MAX and allgather
// on CPU tensors), so the distributed calibration runs in a unit test without gloo headers (the
// torch wheel ships gloo's library, not its headers). Every collective waits at most 30 s.
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/torch.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace torchqat_test {

struct Rendezvous {
  explicit Rendezvous(int world) : slots(world) {}
  std::mutex m;
  std::condition_variable cv;
  int arrived = 0;
  int64_t generation = 0;
  std::vector<at::Tensor> slots;

  void barrier() {
    std::unique_lock<std::mutex> lock(m);
    const int64_t gen = generation;
    if (++arrived == static_cast<int>(slots.size())) {
      arrived = 0;
      ++generation;
      cv.notify_all();
      return;
    }
    TORCH_CHECK(cv.wait_for(lock, std::chrono::seconds(30), [&] { return generation != gen; }),
                "thread group: a rank did not reach the collective within 30 s");
  }
  // Every rank's t, once all ranks gave theirs.
  std::vector<at::Tensor> exchange(int rank, const at::Tensor& t) {
    {
      std::lock_guard<std::mutex> lock(m);
      slots[rank] = t.detach().clone();
    }
    barrier();
    std::vector<at::Tensor> all;
    {
      std::lock_guard<std::mutex> lock(m);
      for (auto& s : slots) all.push_back(s.clone());
    }
    barrier();  // nobody overwrites a slot before every rank read it
    return all;
  }
};

class DoneWork : public c10d::Work {
 public:
  bool isCompleted() override { return true; }
  bool wait(std::chrono::milliseconds) override { return true; }
};

class ThreadBackend : public c10d::Backend {
 public:
  ThreadBackend(std::shared_ptr<Rendezvous> r, int rank, int size) : c10d::Backend(rank, size), r_(std::move(r)) {}
  const std::string getBackendName() const override { return "threads"; }

  c10::intrusive_ptr<c10d::Work> allreduce(std::vector<at::Tensor>& tensors,
                                           const c10d::AllreduceOptions& o) override {
    auto all = r_->exchange(getRank(), tensors[0]);
    at::Tensor acc = all[0];
    for (size_t i = 1; i < all.size(); ++i) {
      if (o.reduceOp == c10d::ReduceOp::SUM) {
        acc = acc + all[i];
      } else {
        TORCH_CHECK(o.reduceOp == c10d::ReduceOp::MAX, "thread group: only SUM and MAX");
        acc = at::maximum(acc, all[i]);
      }
    }
    tensors[0].copy_(acc);
    return c10::make_intrusive<DoneWork>();
  }
  c10::intrusive_ptr<c10d::Work> allgather(std::vector<std::vector<at::Tensor>>& out, std::vector<at::Tensor>& in,
                                           const c10d::AllgatherOptions&) override {
    auto all = r_->exchange(getRank(), in[0]);
    for (size_t i = 0; i < all.size(); ++i) out[0][i].copy_(all[i]);
    return c10::make_intrusive<DoneWork>();
  }

 private:
  std::shared_ptr<Rendezvous> r_;
};

// Runs f(rank, group) on world threads sharing one group; rethrows the first rank's exception.
inline void run_ranks(int world, const std::function<void(int, c10::intrusive_ptr<c10d::ProcessGroup>)>& f) {
  auto r = std::make_shared<Rendezvous>(world);
  std::vector<std::exception_ptr> errors(world);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < world; ++rank) {
    threads.emplace_back([&, rank] {
      try {
        auto group = c10::make_intrusive<c10d::ProcessGroup>(rank, world);
        auto backend = c10::make_intrusive<ThreadBackend>(r, rank, world);
        group->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::CUSTOM, backend);
        group->setDefaultBackend(c10d::ProcessGroup::BackendType::CUSTOM);
        f(rank, group);
      } catch (...) {
        errors[rank] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

}  // namespace torchqat_test
