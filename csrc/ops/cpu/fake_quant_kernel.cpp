// CPU kernels: at::parallel_for over memory order; the inner loops are plain loops that GCC
// vectorises (vroundps is round-half-even), cloned for AVX2 with a runtime choice.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "ops/cpu/multiversion.h"
#include "ops/kernels.h"
#include "ops/quant_math.h"

namespace torchqat {
namespace detail {
namespace {

constexpr int64_t kGrain = 32768;

// Calls run(begin, len, c) for stretches of memory that share channel c, and, for the
// channels-last case (inner == 1), cyc(begin, len, c0) where element i has channel c0 + i.
template <typename Run, typename Cyc>
void walk(int64_t n, int64_t channels, int64_t inner, const Run& run, const Cyc& cyc) {
  at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    int64_t o = b;
    while (o < e) {
      if (channels == 1) {
        run(o, e - o, 0);
        return;
      }
      if (inner == 1) {
        const int64_t c = o % channels;
        const int64_t len = std::min(e - o, channels - c);
        cyc(o, len, c);
        o += len;
      } else {
        const int64_t c = (o / inner) % channels;
        const int64_t len = std::min(e - o, inner - o % inner);
        run(o, len, c);
        o += len;
      }
    }
  });
}

// F is the format (quant_math.h's IntFormat or E4M3Format); float64 computes in double.
template <typename F, typename T>
TORCHQAT_MULTIVERSION
void fq_run(const T* __restrict x, T* __restrict y, int64_t n, Step s, float qmin, float qmax) {
  using A = typename Compute<T>::type;
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<T>(F::one(static_cast<A>(x[i]), s, qmin, qmax));
}

template <typename F, typename T>
TORCHQAT_MULTIVERSION
void fq_cyc(const T* __restrict x, T* __restrict y, int64_t n, const float* __restrict step,
            const float* __restrict inv, float qmin, float qmax) {
  using A = typename Compute<T>::type;
  for (int64_t i = 0; i < n; ++i) {
    y[i] = static_cast<T>(F::one(static_cast<A>(x[i]), Step{step[i], inv[i]}, qmin, qmax));
  }
}

template <typename F, typename T>
TORCHQAT_MULTIVERSION
void bwd_run(const T* __restrict g, const T* __restrict x, T* __restrict gx, float* __restrict ds, int64_t n,
             float amax, Step s, float qmin, float qmax) {
  // The incoming gradient passes unchanged (float64 keeps float64); the mask is compared in the
  // element's compute type.
  using A = typename Compute<T>::type;
  for (int64_t i = 0; i < n; ++i) gx[i] = in_range(static_cast<A>(x[i]), amax) ? g[i] : static_cast<T>(0.0f);
  if (ds) {
    for (int64_t i = 0; i < n; ++i) ds[i] = static_cast<float>(g[i]) * F::dstep(static_cast<float>(x[i]), s, qmin, qmax);
  }
}

struct Steps {
  std::vector<float> amax, step, inv;
};

template <typename F>
Steps make_steps(const Layout& L, float bound) {
  Steps S;
  const float* a = L.amax.data_ptr<float>();
  const int64_t k = L.amax.numel();
  S.amax.assign(a, a + k);
  S.step.resize(k);
  S.inv.resize(k);
  for (int64_t c = 0; c < k; ++c) {
    const Step s = F::make(a[c], bound);
    S.step[c] = s.step;
    S.inv[c] = s.inv;
  }
  return S;
}

template <typename F>
void forward(const KernelArgs& a, at::Tensor& out) {
  const Layout& L = a.L;
  const QuantRange r = a.r;
  const Steps S = make_steps<F>(L, r.bound);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, L.x.scalar_type(), "torchqat_fake_quant_cpu", [&] {
    const scalar_t* x = L.x.const_data_ptr<scalar_t>();
    scalar_t* y = out.data_ptr<scalar_t>();
    walk(
        L.x.numel(), L.channels, L.inner,
        [&](int64_t o, int64_t n, int64_t c) {
          fq_run<F, scalar_t>(x + o, y + o, n, Step{S.step[c], S.inv[c]}, r.qmin, r.qmax);
        },
        [&](int64_t o, int64_t n, int64_t c) {
          fq_cyc<F, scalar_t>(x + o, y + o, n, S.step.data() + c, S.inv.data() + c, r.qmin, r.qmax);
        });
  });
}

template <typename F>
void backward(const KernelArgs& a, const at::Tensor& grad, at::Tensor& grad_x, at::Tensor& dstep) {
  const Layout& L = a.L;
  const QuantRange r = a.r;
  const Steps S = make_steps<F>(L, r.bound);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, L.x.scalar_type(), "torchqat_fake_quant_bwd_cpu", [&] {
    const scalar_t* x = L.x.const_data_ptr<scalar_t>();
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    scalar_t* gx = grad_x.data_ptr<scalar_t>();
    float* ds = dstep.defined() ? dstep.data_ptr<float>() : nullptr;
    auto run = [&](int64_t o, int64_t n, int64_t c) {
      bwd_run<F, scalar_t>(g + o, x + o, gx + o, ds ? ds + o : nullptr, n, S.amax[c], Step{S.step[c], S.inv[c]},
                           r.qmin, r.qmax);
    };
    // Channels-last rows: one element per channel, so call the run loop per element.
    auto cyc = [&](int64_t o, int64_t n, int64_t c) {
      for (int64_t i = 0; i < n; ++i) run(o + i, 1, c + i);
    };
    walk(L.x.numel(), L.channels, L.inner, run, cyc);
  });
}

}  // namespace

void fake_quant_cpu_kernel(const KernelArgs& a, at::Tensor& out) {
  if (a.fmt == Format::kE4M3) forward<E4M3Format>(a, out);
  else forward<IntFormat>(a, out);
}

void fake_quant_backward_cpu_kernel(const KernelArgs& a, const at::Tensor& grad, at::Tensor& grad_x,
                                    at::Tensor& dstep) {
  if (a.fmt == Format::kE4M3) backward<E4M3Format>(a, grad, grad_x, dstep);
  else backward<IntFormat>(a, grad, grad_x, dstep);
}

}  // namespace detail
}  // namespace torchqat
