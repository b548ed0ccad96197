// Training-mode batch norm fused with the ReLU6 that follows it (issue 17): one autograd node,
// two passes over the activation forward (statistics; normalise + clamp) and two backward
// (the per-channel reductions; dX), where ATen's batch_norm + hardtanh take five and three with a
// full-size temporary in between. On CPU float32 tensors laid out NCHW-contiguous or
// channels-last; anything else (CUDA, other layouts) runs the ATen ops it replaces.
//
//   forward   mean, var = batch statistics over (N, H, W)   (var biased; the running var unbiased)
//             y = clamp((x − mean)·invstd·w + b, 0, 6)       (no clamp without relu6)
//   backward  g = gy · [0 < y < 6]                           (hardtanh's mask, from the output)
//             db = Σ g,  dw = Σ g·(x − mean)·invstd
//             dx = w·invstd·(g − db/M − (x − mean)·invstd²·Σ g·(x − mean)/M)
//
// Each channel's sums are made by one thread in a fixed order, so results do not depend on the
// thread count. The statistics are shifted by the channel's first value (the one-pass "shifted
// data" variance): an Add layer's outputs sit far from 0 with a small spread, where E[x²] − E[x]²
// would cancel away the variance.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "ffi.h"

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SHIFTADD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SHIFTADD_CLONES
#endif

constexpr int kLanes = 8;

// An activation seen as planes: NCHW is [N][C][L] (plane stride L, channel stride L), channels-last
// is [N·L][C] (one "plane" per channel of length N·L with element stride C).
struct Shape {
  int64_t n, c, l;
  bool last;  // channels-last
  int64_t m() const { return n * l; }
};

// NCHW: one channel is `n` planes of `len` contiguous floats, `stride` apart. Float lanes are
// flushed into the doubles every kFlush elements or so (a plane at least).
constexpr int64_t kFlush = 256;

inline int64_t planes_per_flush(int64_t len) { return std::max<int64_t>(1, kFlush / std::max<int64_t>(1, len)); }

// Σ (x − k) and Σ (x − k)² over one channel, in kLanes float lanes (vectorisable without
// reassociation), added into doubles.
SHIFTADD_CLONES
void channel_moments(const float* __restrict x, int64_t n, int64_t len, int64_t stride, float k, double& s,
                     double& q) {
  const int64_t per = planes_per_flush(len);
  for (int64_t p0 = 0; p0 < n; p0 += per) {
    float as[kLanes] = {}, aq[kLanes] = {};
    for (int64_t p = p0; p < std::min(n, p0 + per); ++p) {
      const float* __restrict xp = x + p * stride;
      int64_t i = 0;
      for (; i + kLanes <= len; i += kLanes) {
        for (int j = 0; j < kLanes; ++j) {
          const float d = xp[i + j] - k;
          as[j] += d;
          aq[j] += d * d;
        }
      }
      for (; i < len; ++i) {
        const float d = xp[i] - k;
        as[0] += d;
        aq[0] += d * d;
      }
    }
    for (int j = 0; j < kLanes; ++j) {
      s += as[j];
      q += aq[j];
    }
  }
}

// Channels-last: the same sums for channels [c0, c1) over rows [r0, r1) of a [M][C] matrix.
SHIFTADD_CLONES
void rows_moments(const float* __restrict x, int64_t r0, int64_t r1, int64_t cstride, int64_t c0, int64_t c1,
                  const float* __restrict k, float* __restrict as, float* __restrict aq) {
  const int64_t w = c1 - c0;
  for (int64_t r = r0; r < r1; ++r) {
    const float* __restrict row = x + r * cstride + c0;
    for (int64_t j = 0; j < w; ++j) {
      const float d = row[j] - k[j];
      as[j] += d;
      aq[j] += d * d;
    }
  }
}

// y = clamp((x − mean)·a + b, 0, 6) (relu6) or (x − mean)·a + b over one NCHW channel. Centred
// first: x·a + (b − mean·a) would cancel away the small spread of values far from 0.
SHIFTADD_CLONES
void channel_affine(const float* __restrict x, float* __restrict y, int64_t n, int64_t len, int64_t stride,
                    float mean, float a, float b, bool relu6) {
  for (int64_t p = 0; p < n; ++p) {
    const float* __restrict xp = x + p * stride;
    float* __restrict yp = y + p * stride;
    if (relu6) {
      for (int64_t i = 0; i < len; ++i) yp[i] = std::min(std::max((xp[i] - mean) * a + b, 0.0f), 6.0f);
    } else {
      for (int64_t i = 0; i < len; ++i) yp[i] = (xp[i] - mean) * a + b;
    }
  }
}

SHIFTADD_CLONES
void row_affine(const float* __restrict x, float* __restrict y, int64_t w, const float* __restrict mean,
                const float* __restrict a, const float* __restrict b, bool relu6) {
  if (relu6) {
    for (int64_t j = 0; j < w; ++j) y[j] = std::min(std::max((x[j] - mean[j]) * a[j] + b[j], 0.0f), 6.0f);
  } else {
    for (int64_t j = 0; j < w; ++j) y[j] = (x[j] - mean[j]) * a[j] + b[j];
  }
}

// hardtanh's gradient mask, from the output: 0 < y < 6 (with `relu6`; else everything passes).
// A product with 0 or 1, which vectorises (a select would not: the compiler will not load gy
// where it is not used); the same value as ATen's masking for every finite gradient.
template <bool Relu6>
inline float masked(float gy, float y) {
  if constexpr (Relu6) {
    return gy * static_cast<float>((y > 0.0f) & (y < 6.0f));
  } else {
    return gy;
  }
}

// Σ g and Σ g·(x − mean), g = gy·mask(y), over one NCHW channel.
template <bool Relu6>
SHIFTADD_CLONES void channel_grad_sums(const float* __restrict x, const float* __restrict y,
                                       const float* __restrict gy, int64_t n, int64_t len, int64_t stride, float mean,
                                       double& sg, double& sgx) {
  const int64_t per = planes_per_flush(len);
  for (int64_t p0 = 0; p0 < n; p0 += per) {
    float ag[kLanes] = {}, ax[kLanes] = {};
    for (int64_t p = p0; p < std::min(n, p0 + per); ++p) {
      const int64_t o = p * stride;
      int64_t i = 0;
      for (; i + kLanes <= len; i += kLanes) {
        for (int j = 0; j < kLanes; ++j) {
          const float g = masked<Relu6>(gy[o + i + j], y[o + i + j]);
          ag[j] += g;
          ax[j] += g * (x[o + i + j] - mean);
        }
      }
      for (; i < len; ++i) {
        const float g = masked<Relu6>(gy[o + i], y[o + i]);
        ag[0] += g;
        ax[0] += g * (x[o + i] - mean);
      }
    }
    for (int j = 0; j < kLanes; ++j) {
      sg += ag[j];
      sgx += ax[j];
    }
  }
}

template <bool Relu6>
SHIFTADD_CLONES void rows_grad_sums(const float* __restrict x, const float* __restrict y, const float* __restrict gy,
                                    int64_t r0, int64_t r1, int64_t cstride, int64_t c0, int64_t c1,
                                    const float* __restrict mean, float* __restrict ag, float* __restrict ax) {
  const int64_t w = c1 - c0;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t at = r * cstride + c0;
    for (int64_t j = 0; j < w; ++j) {
      const float g = masked<Relu6>(gy[at + j], y[at + j]);
      ag[j] += g;
      ax[j] += g * (x[at + j] - mean[j]);
    }
  }
}

// dx = g·k1 + (x − mean)·k2 + k3 over one NCHW channel.
template <bool Relu6>
SHIFTADD_CLONES void channel_dx(const float* __restrict x, const float* __restrict y, const float* __restrict gy,
                                float* __restrict dx, int64_t n, int64_t len, int64_t stride, float mean, float k1,
                                float k2, float k3) {
  for (int64_t p = 0; p < n; ++p) {
    const int64_t o = p * stride;
    for (int64_t i = 0; i < len; ++i)
      dx[o + i] = masked<Relu6>(gy[o + i], y[o + i]) * k1 + (x[o + i] - mean) * k2 + k3;
  }
}

template <bool Relu6>
SHIFTADD_CLONES void row_dx(const float* __restrict x, const float* __restrict y, const float* __restrict gy,
                            float* __restrict dx, int64_t w, const float* __restrict mean,
                            const float* __restrict k1, const float* __restrict k2, const float* __restrict k3) {
  for (int64_t j = 0; j < w; ++j) dx[j] = masked<Relu6>(gy[j], y[j]) * k1[j] + (x[j] - mean[j]) * k2[j] + k3[j];
}

// Rows of a channels-last block whose float partial sums are flushed into doubles.
constexpr int64_t kRowBlock = 64;

// Channels per task: enough elements that a task is worth a thread.
int64_t grain(const Shape& s) { return std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, s.m())); }

// Per channel: the two sums `channel` (NCHW) or `rows` (channels-last) make, in doubles.
template <typename Channel, typename Rows>
void per_channel_sums(const Shape& s, double* s1, double* s2, Channel channel, Rows rows) {
  at::parallel_for(0, s.c, grain(s), [&](int64_t c0, int64_t c1) {
    if (!s.last) {
      for (int64_t c = c0; c < c1; ++c) {
        double a = 0.0, b = 0.0;
        channel(c, a, b);
        s1[c] = a;
        s2[c] = b;
      }
      return;
    }
    const int64_t w = c1 - c0;
    std::vector<float> fa(w), fb(w);
    std::fill(s1 + c0, s1 + c1, 0.0);
    std::fill(s2 + c0, s2 + c1, 0.0);
    for (int64_t r = 0; r < s.m(); r += kRowBlock) {
      std::fill(fa.begin(), fa.end(), 0.0f);
      std::fill(fb.begin(), fb.end(), 0.0f);
      rows(r, std::min(r + kRowBlock, s.m()), c0, c1, fa.data(), fb.data());
      for (int64_t j = 0; j < w; ++j) {
        s1[c0 + j] += fa[j];
        s2[c0 + j] += fb[j];
      }
    }
  });
}

// The fused path applies: CPU float32, 4-D, NCHW- or channels-last-contiguous, contiguous float
// parameters of C entries, more than one value per channel.
bool fusable(const at::Tensor& x, std::initializer_list<const at::Tensor*> params) {
  // SHIFTADD_FUSED_BN=0: ATen's ops everywhere (a diagnostic switch, read once).
  static const bool off = [] {
    const char* v = std::getenv("SHIFTADD_FUSED_BN");
    return v != nullptr && std::string(v) == "0";
  }();
  if (off) return false;
  if (!x.device().is_cpu() || x.scalar_type() != at::kFloat || x.dim() != 4) return false;
  if (!x.is_contiguous() && !x.is_contiguous(at::MemoryFormat::ChannelsLast)) return false;
  if (x.size(0) * x.size(2) * x.size(3) < 2) return false;
  for (const at::Tensor* p : params) {
    if (!p->defined() || !p->device().is_cpu() || p->scalar_type() != at::kFloat || !p->is_contiguous() ||
        p->dim() != 1 || p->size(0) != x.size(1))
      return false;
  }
  return true;
}

Shape shape_of(const at::Tensor& x) {
  // A tensor both NCHW- and channels-last-contiguous (1×1 planes, or one channel) reads the same either way.
  const bool last = !x.is_contiguous();
  return {x.size(0), x.size(1), x.size(2) * x.size(3), last};
}

struct BnRelu6 : public torch::autograd::Function<BnRelu6> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& bias, const at::Tensor& running_mean, const at::Tensor& running_var,
                            double momentum, double eps, bool relu6) {
    const Shape s = shape_of(x);
    const float* xp = x.data_ptr<float>();
    const double m = static_cast<double>(s.m());
    // Shifts: each channel's first value.
    std::vector<float> k(s.c);
    for (int64_t c = 0; c < s.c; ++c) k[c] = s.last ? xp[c] : xp[c * s.l];
    std::vector<double> sum(s.c), sq(s.c);
    per_channel_sums(
        s, sum.data(), sq.data(),
        [&](int64_t c, double& a, double& b) { channel_moments(xp + c * s.l, s.n, s.l, s.c * s.l, k[c], a, b); },
        [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1, float* a, float* b) {
          rows_moments(xp, r0, r1, s.c, c0, c1, k.data() + c0, a, b);
        });
    auto opts = x.options();
    // The loops centre on the float mean; `residual` = float mean − exact mean, per channel, puts
    // the difference back into the per-channel constants (a constant offset of every x − mean).
    auto mean = at::empty({s.c}, opts);
    auto residual = at::empty({s.c}, opts);
    auto invstd = at::empty({s.c}, opts);
    float* mp = mean.data_ptr<float>();
    float* ep = residual.data_ptr<float>();
    float* ip = invstd.data_ptr<float>();
    float* rm = running_mean.data_ptr<float>();
    float* rv = running_var.data_ptr<float>();
    const float* wp = weight.data_ptr<float>();
    const float* bp = bias.data_ptr<float>();
    std::vector<float> a(s.c), b(s.c);
    for (int64_t c = 0; c < s.c; ++c) {
      const double d = sum[c] / m;
      const double var = std::max(sq[c] / m - d * d, 0.0);
      const double mu = static_cast<double>(k[c]) + d;
      mp[c] = static_cast<float>(mu);
      ep[c] = static_cast<float>(static_cast<double>(mp[c]) - mu);
      ip[c] = static_cast<float>(1.0 / std::sqrt(var + eps));
      rm[c] = static_cast<float>((1.0 - momentum) * rm[c] + momentum * mu);
      rv[c] = static_cast<float>((1.0 - momentum) * rv[c] + momentum * var * m / (m - 1.0));
      a[c] = wp[c] * ip[c];
      b[c] = static_cast<float>(static_cast<double>(bp[c]) + static_cast<double>(ep[c]) * a[c]);
    }
    auto y = at::empty_like(x, at::MemoryFormat::Preserve);
    float* yp = y.data_ptr<float>();
    if (s.last) {
      at::parallel_for(0, s.m(), std::max<int64_t>(1, (int64_t{1} << 15) / s.c), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) row_affine(xp + r * s.c, yp + r * s.c, s.c, mp, a.data(), b.data(), relu6);
      });
    } else {
      at::parallel_for(0, s.c, grain(s), [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) {
          channel_affine(xp + c * s.l, yp + c * s.l, s.n, s.l, s.c * s.l, mp[c], a[c], b[c], relu6);
        }
      });
    }
    ctx->save_for_backward({x, y, weight, mean, residual, invstd});
    ctx->saved_data["relu6"] = relu6;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& y = saved[1];
    const auto& weight = saved[2];
    const auto& mean = saved[3];
    const auto& residual = saved[4];
    const auto& invstd = saved[5];
    const bool relu6 = ctx->saved_data["relu6"].toBool();
    const Shape s = shape_of(x);
    // The incoming gradient in the activation's layout.
    if (!grad_out[0].defined()) return variable_list(8);
    auto gy = grad_out[0].to(at::kFloat).contiguous(s.last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
    const float* xp = x.data_ptr<float>();
    const float* yp = y.data_ptr<float>();
    const float* gp = gy.data_ptr<float>();
    const float* mp = mean.data_ptr<float>();
    const float* ip = invstd.data_ptr<float>();
    const float* wp = weight.data_ptr<float>();
    std::vector<double> sg(s.c), sgx(s.c);
    per_channel_sums(
        s, sg.data(), sgx.data(),
        [&](int64_t c, double& a, double& b) {
          const int64_t at = c * s.l;
          (relu6 ? channel_grad_sums<true> : channel_grad_sums<false>)(xp + at, yp + at, gp + at, s.n, s.l,
                                                                       s.c * s.l, mp[c], a, b);
        },
        [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1, float* a, float* b) {
          (relu6 ? rows_grad_sums<true> : rows_grad_sums<false>)(xp, yp, gp, r0, r1, s.c, c0, c1, mp + c0, a, b);
        });
    // Σ g·(x − exact mean) = Σ g·(x − float mean) + residual·Σ g.
    const float* ep = residual.data_ptr<float>();
    for (int64_t c = 0; c < s.c; ++c) sgx[c] += static_cast<double>(ep[c]) * sg[c];
    auto opts = x.options();
    at::Tensor dw, db, dx;
    if (ctx->needs_input_grad(1)) {
      dw = at::empty({s.c}, opts);
      float* p = dw.data_ptr<float>();
      for (int64_t c = 0; c < s.c; ++c) p[c] = static_cast<float>(sgx[c] * ip[c]);
    }
    if (ctx->needs_input_grad(2)) {
      db = at::empty({s.c}, opts);
      float* p = db.data_ptr<float>();
      for (int64_t c = 0; c < s.c; ++c) p[c] = static_cast<float>(sg[c]);
    }
    if (ctx->needs_input_grad(0)) {
      const double m = static_cast<double>(s.m());
      std::vector<float> k1(s.c), k2(s.c), k3(s.c);
      for (int64_t c = 0; c < s.c; ++c) {
        const double wi = static_cast<double>(wp[c]) * ip[c];
        k1[c] = static_cast<float>(wi);
        const double k2c = -wi * ip[c] * ip[c] * sgx[c] / m;
        k2[c] = static_cast<float>(k2c);
        k3[c] = static_cast<float>(-wi * sg[c] / m + k2c * ep[c]);  // (x − float mean)·k2 is off by residual·k2
      }
      dx = at::empty_like(x, at::MemoryFormat::Preserve);
      float* dp = dx.data_ptr<float>();
      if (s.last) {
        at::parallel_for(0, s.m(), std::max<int64_t>(1, (int64_t{1} << 15) / s.c), [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) {
            const int64_t at = r * s.c;
            (relu6 ? row_dx<true> : row_dx<false>)(xp + at, yp + at, gp + at, dp + at, s.c, mp, k1.data(), k2.data(),
                                                   k3.data());
          }
        });
      } else {
        at::parallel_for(0, s.c, grain(s), [&](int64_t c0, int64_t c1) {
          for (int64_t c = c0; c < c1; ++c) {
            const int64_t at = c * s.l;
            (relu6 ? channel_dx<true> : channel_dx<false>)(xp + at, yp + at, gp + at, dp + at, s.n, s.l, s.c * s.l,
                                                           mp[c], k1[c], k2[c], k3[c]);
          }
        });
      }
    }
    return {dx, dw, db, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// What the fused op replaces: ATen's batch norm, then ReLU6 (hardtanh 0..6).
at::Tensor unfused(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, const at::Tensor& rm,
                   const at::Tensor& rv, double momentum, double eps, bool relu6) {
  auto z = at::batch_norm(x, w, b, rm, rv, /*training=*/true, momentum, eps, /*cudnn_enabled=*/true);
  return relu6 ? at::hardtanh(z, 0.0, 6.0) : z;
}

}  // namespace

extern "C" {

// Training-mode batch norm of x [N, C, H, W] with weight, bias and running statistics [C] (updated
// in place), then ReLU6 when `relu6`; differentiable. `fused` = 0 forces the ATen ops (tests).
// Returns a new tensor, or nullptr with *err set.
at::Tensor* shiftadd_bn_relu6(const at::Tensor* x, const at::Tensor* w, const at::Tensor* b, const at::Tensor* rm,
                              const at::Tensor* rv, double momentum, double eps, int32_t relu6, int32_t fused,
                              char** err) {
  return shiftadd_ffi::guarded<at::Tensor*>(err, nullptr, [&] {
    const bool r = relu6 != 0;
    if (fused != 0 && fusable(*x, {w, b, rm, rv})) {
      return new at::Tensor(BnRelu6::apply(*x, *w, *b, *rm, *rv, momentum, eps, r));
    }
    return new at::Tensor(unfused(*x, *w, *b, *rm, *rv, momentum, eps, r));
  });
}

}  // extern "C"
