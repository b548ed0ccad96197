// Straight-through elementwise maps of the Shift operator (method.md §2), as one libtorch autograd
// function: the forward is a single pass over the tensor, the backward passes the gradient through
// unchanged (no temporaries, no extra kernels), instead of the five-op `x + (q(x) - x).detach()`.
//
//   op 0: 16.16 fixed point     q(x) = round(x * 2^16) / 2^16            (round half to even)
//   op 1: DeepShift-Q weights   q(w) = sign(w) * 2^clamp(round(log2 max(|w|, 2^pmin)), pmin, 0),
//                               sign(0) = +1, pmin = arg
//
// Float32 CPU tensors take the direct loop; anything else (double, CUDA) the same map
// written with ATen ops. Compiled without -ffast-math: the rounding must be exact.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include "ffi.h"

#include <cmath>

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Round half to even without a libm call: for |t| < 2^23, adding and subtracting 2^23 rounds |t|
// to an integer in the default rounding mode; larger |t| (and inf, NaN) are kept. Both sides of
// the choice are computed and the choice is a select, not a branch: under the default
// -ftrapping-math GCC will not if-convert a conditional float add, and the loop stayed scalar
// (a fifth of an MF-augmented step in `perf`); as a select it runs 8 lanes at a time, with the
// same result in every lane.
inline float fixed_16_16(float v) {
  const float t = v * 65536.0f;
  const float a = std::fabs(t);
  const float rounded = (a + 8388608.0f) - 8388608.0f;
  const float r = a < 8388608.0f ? rounded : a;
  return std::copysign(r, t) * (1.0f / 65536.0f);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SHIFTADD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SHIFTADD_CLONES
#endif

SHIFTADD_CLONES void fixed_16_16_loop(const float* in, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = fixed_16_16(in[i]);
}

// round(log2 a) from the exponent and mantissa: a = m * 2^e, m in [0.5, 1), so
// round(log2 a) = e if m >= 2^-0.5 else e - 1 (the comparison in double is exact for floats).
inline float pow2(float v, int pmin) {
  float a = std::fabs(v);
  const float lo = std::ldexp(1.0f, pmin);
  if (!(a >= lo)) a = (a != a) ? a : lo;  // clamp_min, NaN kept
  if (a != a) return a;
  int e = 0;
  const float m = std::frexp(a, &e);
  int p = static_cast<double>(m) >= 0.70710678118654752440 ? e : e - 1;
  p = p < pmin ? pmin : (p > 0 ? 0 : p);
  const float q = std::ldexp(1.0f, p);
  return v >= 0.0f ? q : -q;
}

at::Tensor map_aten(const at::Tensor& x, int64_t op, int64_t arg) {
  if (op == 0) return at::round(x * 65536.0) / 65536.0;
  const double pmin = static_cast<double>(arg);
  auto sign = x.ge(0).to(x.scalar_type()) * 2 - 1;
  auto p = x.abs().clamp_min(std::exp2(pmin)).log2().round().clamp(pmin, 0.0);
  return sign * p.exp2();
}

at::Tensor map(const at::Tensor& x_in, int64_t op, int64_t arg) {
  TORCH_CHECK(op == 0 || op == 1, "straight_through: unknown op ", op);
  if (!(x_in.device().is_cpu() && x_in.scalar_type() == at::kFloat)) return map_aten(x_in, op, arg);
  // Elementwise: any dense layout (channels-last activations too) is walked in memory order and
  // kept; only a strided view (a sliced weight, small) is copied first.
  const auto x = x_in.is_non_overlapping_and_dense() ? x_in : x_in.contiguous();
  auto out = at::empty_like(x);  // the same strides as x
  const float* in = x.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const int pmin = static_cast<int>(arg);
  at::parallel_for(0, x.numel(), 1 << 15, [&](int64_t b, int64_t e) {
    if (op == 0) {
      fixed_16_16_loop(in + b, o + b, e - b);
    } else {
      for (int64_t i = b; i < e; ++i) o[i] = pow2(in[i], pmin);
    }
  });
  return out;
}

struct StraightThrough : public torch::autograd::Function<StraightThrough> {
  static at::Tensor forward(AutogradContext*, const at::Tensor& x, int64_t op, int64_t arg) {
    at::NoGradGuard no_grad;
    return map(x, op, arg);
  }
  static variable_list backward(AutogradContext*, variable_list grad_out) {
    return {grad_out[0], at::Tensor(), at::Tensor()};
  }
};

}  // namespace

extern "C" {

// q(x) with a straight-through gradient. Returns a new tensor, or nullptr with *err set.
at::Tensor* shiftadd_straight_through(const at::Tensor* x, int64_t op, int64_t arg, char** err) {
  return shiftadd_ffi::guarded<at::Tensor*>(err, nullptr,
                                            [&] { return new at::Tensor(StraightThrough::apply(*x, op, arg)); });
}

}  // extern "C"
