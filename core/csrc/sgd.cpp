// One SGD update of one parameter in a single pass (issue 17), in PyTorch's formulation and
// with exactly the roundings of the unfused ATen ops it replaces (no fused multiply-add: this
// file is compiled with -ffp-contract=off):
//
//   g' = g + wd·p                      (wd = 0: g' = g)
//   buf = μ·buf + g'                   (μ = 0: no buffer, d = g')
//   d  = g' + μ·buf  (Nesterov)  or  buf
//   p  = p − lr·d
//
// An undefined `g` counts as zeros. Contiguous float32 CPU tensors take the loop; anything else
// (CUDA, double) the same update in in-place ATen ops with one temporary.
//
// `step_many` updates a group of parameters sharing one weight decay with ATen's multi-tensor
// (`_foreach_*`) ops: on CUDA about five launches for the whole group instead of about eight per
// parameter (issue 42, item 3). Its roundings are those of the foreach kernels (a GPU may fuse
// g + wd·p into one FMA): the per-parameter path stays the CPU's.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <vector>

#include "ffi.h"

namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SHIFTADD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SHIFTADD_CLONES
#endif

SHIFTADD_CLONES
void update(float* __restrict p, const float* __restrict g, float* __restrict buf, int64_t n, float lr,
            float mu, bool nesterov, float wd) {
  for (int64_t i = 0; i < n; ++i) {
    float gi = g != nullptr ? g[i] : 0.0f;
    if (wd != 0.0f) gi = gi + p[i] * wd;
    float d = gi;
    if (mu != 0.0f) {
      const float b = buf[i] * mu + gi;
      buf[i] = b;
      d = nesterov ? gi + b * mu : b;
    }
    p[i] = p[i] - d * lr;
  }
}

bool fast(const at::Tensor& t) { return t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous(); }

void step(at::Tensor& p, const at::Tensor* g, at::Tensor& buf, double lr, double mu, bool nesterov, double wd) {
  at::NoGradGuard no_grad;
  const bool has_g = g != nullptr && g->defined();
  if (fast(p) && fast(buf) && (!has_g || fast(*g))) {
    float* pp = p.data_ptr<float>();
    float* bp = buf.data_ptr<float>();
    const float* gp = has_g ? g->data_ptr<float>() : nullptr;
    at::parallel_for(0, p.numel(), 1 << 14, [&](int64_t b, int64_t e) {
      update(pp + b, gp != nullptr ? gp + b : nullptr, bp + b, e - b, static_cast<float>(lr),
             static_cast<float>(mu), nesterov, static_cast<float>(wd));
    });
    // Written through raw pointers: bump the version counters as an in-place op would, so
    // whatever keys on them (autograd's checks, the remap's cache) sees the change.
    p.unsafeGetTensorImpl()->bump_version();
    buf.unsafeGetTensorImpl()->bump_version();
    return;
  }
  at::Tensor d = has_g ? g->clone() : at::zeros_like(p);
  if (wd != 0.0) d.add_(p * wd);
  if (mu != 0.0) {
    buf.mul_(mu).add_(d);
    if (nesterov) {
      d.add_(buf * mu);
    } else {
      d.copy_(buf);
    }
  }
  p.sub_(d * lr);
}

void step_many(const std::vector<at::Tensor>& ps_in, const std::vector<at::Tensor>& gs_in,
               const std::vector<at::Tensor>& bs_in, double lr, double mu, bool nesterov, double wd) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> ps, gs, bs;
  for (size_t i = 0; i < ps_in.size(); ++i) {
    if (!gs_in[i].defined()) continue;  // no gradient: left as the per-parameter path leaves it
    ps.push_back(ps_in[i]);
    gs.push_back(gs_in[i]);
    bs.push_back(bs_in[i]);
  }
  if (ps.empty()) return;
  std::vector<at::Tensor> d = wd != 0.0 ? at::_foreach_add(gs, ps, wd) : at::_foreach_mul(gs, 1.0);
  if (mu != 0.0) {
    at::_foreach_mul_(bs, mu);
    at::_foreach_add_(bs, d);
    if (nesterov) {
      at::_foreach_add_(d, bs, mu);
    } else {
      d = bs;
    }
  }
  at::_foreach_add_(ps, d, -lr);
}

}  // namespace

extern "C" {

// One update of `n` parameters sharing `weight_decay` (a null gradient: skipped). 0, or -1 with
// *err set.
int shiftadd_sgd_step_many(at::Tensor** ps, const at::Tensor** gs, at::Tensor** bufs, int64_t n, double lr,
                           double momentum, int nesterov, double weight_decay, char** err) {
  return shiftadd_ffi::guarded<int>(err, -1, [&] {
    std::vector<at::Tensor> p, g, b;
    for (int64_t i = 0; i < n; ++i) {
      p.push_back(*ps[i]);
      g.push_back(gs[i] != nullptr ? *gs[i] : at::Tensor());
      b.push_back(*bufs[i]);
    }
    step_many(p, g, b, lr, momentum, nesterov != 0, weight_decay);
    return 0;
  });
}

// Returns 0, or -1 with *err set (a malloc'd message for shiftadd_free_error).
int shiftadd_sgd_step(at::Tensor* p, const at::Tensor* g, at::Tensor* buf, double lr, double momentum,
                      int nesterov, double weight_decay, char** err) {
  return shiftadd_ffi::guarded<int>(err, -1, [&] {
    step(*p, g, *buf, lr, momentum, nesterov != 0, weight_decay);
    return 0;
  });
}

}  // extern "C"
