// AdderNet convolution as a libtorch autograd function (method.md §2, "Add").
//
//   Y[n,o,y,x] = -sum_{c,i,j} | X[n,c,y*s+i-p,x*s+j-p] - F[o,c,i,j] |      (groups supported)
//   dL/dF      =  sum_{n,l} dY[n,o,l] * (X_patch[n,k,l] - F[o,k])           (full precision)
//   dL/dX      =  col2im( sum_o dY[n,o,l] * clamp(F[o,k] - X_patch[n,k,l], -1, 1) )   (HardTanh)
//
// This is the reference formulation on ATen ops: im2col, then the pairwise |X - F| in chunks over
// (batch, output channel) so that the [N, C_out, C_in*k*k, L] temporary never exists whole; its
// peak memory is bounded by `chunk` floats per block. Only x and F are saved for backward (the patches
// are recomputed), so a network of these layers keeps activation-sized state, like a conv.
// Exposed through a C ABI whose tensors are `at::Tensor*`, the same handles `tch` uses.

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;


struct Geometry {
  int64_t n, c, h, w, o, cg, og, kh, kw, ho, wo, l, k, groups, stride, pad;
};

Geometry geometry(const at::Tensor& x, const at::Tensor& f, int64_t stride, int64_t pad, int64_t groups) {
  TORCH_CHECK(x.dim() == 4, "adder_conv2d: input must be [N, C, H, W], got ", x.sizes());
  TORCH_CHECK(f.dim() == 4, "adder_conv2d: weight must be [C_out, C_in/groups, k, k], got ", f.sizes());
  TORCH_CHECK(groups >= 1 && stride >= 1 && pad >= 0, "adder_conv2d: bad stride/padding/groups");
  Geometry g{};
  g.n = x.size(0); g.c = x.size(1); g.h = x.size(2); g.w = x.size(3);
  g.o = f.size(0); g.cg = f.size(1); g.kh = f.size(2); g.kw = f.size(3);
  g.groups = groups; g.stride = stride; g.pad = pad;
  TORCH_CHECK(g.c == g.cg * groups, "adder_conv2d: input has ", g.c, " channels, weight expects ",
              g.cg, " x ", groups, " groups");
  TORCH_CHECK(g.o % groups == 0, "adder_conv2d: ", g.o, " output channels not divisible by ", groups, " groups");
  g.og = g.o / groups;
  g.ho = (g.h + 2 * pad - g.kh) / stride + 1;
  g.wo = (g.w + 2 * pad - g.kw) / stride + 1;
  TORCH_CHECK(g.ho > 0 && g.wo > 0, "adder_conv2d: kernel larger than padded input");
  g.l = g.ho * g.wo;
  g.k = g.cg * g.kh * g.kw;
  return g;
}

// Patches as [N, G, K, L].
at::Tensor patches(const at::Tensor& x, const Geometry& g) {
  auto cols = at::im2col(x, {g.kh, g.kw}, {1, 1}, {g.pad, g.pad}, {g.stride, g.stride});
  return cols.view({g.n, g.groups, g.k, g.l});
}

// Chunk sizes over batch and output-channels-per-group so one [nb, G, ob, K, L] block fits.
std::pair<int64_t, int64_t> chunks(const Geometry& g, int64_t kChunkElems) {
  const int64_t per = g.groups * g.k * g.l;  // elements per (sample, output channel in group)
  int64_t ob = std::max<int64_t>(1, std::min<int64_t>(g.og, kChunkElems / std::max<int64_t>(1, per * g.n)));
  int64_t nb = g.n;
  if (per * g.n * ob > kChunkElems) {
    ob = 1;
    nb = std::max<int64_t>(1, kChunkElems / std::max<int64_t>(1, per));
  }
  return {nb, ob};
}

at::Tensor forward_impl(const at::Tensor& x, const at::Tensor& f, const Geometry& g, int64_t chunk) {
  auto cols = patches(x, g);                       // [N, G, K, L]
  auto fw = f.reshape({g.groups, g.og, g.k});      // [G, Og, K]
  auto y = at::empty({g.n, g.groups, g.og, g.l}, x.options());
  auto [nb, ob] = chunks(g, std::max<int64_t>(1, chunk));
  for (int64_t n0 = 0; n0 < g.n; n0 += nb) {
    const int64_t nn = std::min(nb, g.n - n0);
    auto xc = cols.narrow(0, n0, nn).unsqueeze(2);  // [nn, G, 1, K, L]
    for (int64_t o0 = 0; o0 < g.og; o0 += ob) {
      const int64_t oo = std::min(ob, g.og - o0);
      auto fc = fw.narrow(1, o0, oo).unsqueeze(0).unsqueeze(-1);  // [1, G, oo, K, 1]
      y.narrow(0, n0, nn).narrow(2, o0, oo).copy_((xc - fc).abs_().sum(3).neg_());
    }
  }
  return y.view({g.n, g.o, g.ho, g.wo});
}

// Returns {dX, dF}.
std::pair<at::Tensor, at::Tensor> backward_impl(const at::Tensor& x, const at::Tensor& f, const at::Tensor& gy,
                                                const Geometry& g, int64_t chunk) {
  auto cols = patches(x, g);                                  // [N, G, K, L]
  auto fw = f.reshape({g.groups, g.og, g.k});                 // [G, Og, K]
  auto go = gy.contiguous().view({g.n, g.groups, g.og, g.l});  // [N, G, Og, L]
  // dF[g,o,k] = sum_{n,l} go[n,g,o,l] * cols[n,g,k,l] - F[g,o,k] * sum_{n,l} go[n,g,o,l]
  auto a = go.permute({1, 2, 0, 3}).reshape({g.groups, g.og, g.n * g.l});
  auto b = cols.permute({1, 0, 3, 2}).reshape({g.groups, g.n * g.l, g.k});
  auto df = at::bmm(a, b) - fw * a.sum(-1, /*keepdim=*/true);
  // dcols[n,g,k,l] = sum_o go[n,g,o,l] * clamp(F[g,o,k] - cols[n,g,k,l], -1, 1)
  auto dcols = at::zeros_like(cols);
  auto [nb, ob] = chunks(g, std::max<int64_t>(1, chunk));
  for (int64_t n0 = 0; n0 < g.n; n0 += nb) {
    const int64_t nn = std::min(nb, g.n - n0);
    auto xc = cols.narrow(0, n0, nn).unsqueeze(2);          // [nn, G, 1, K, L]
    auto acc = dcols.narrow(0, n0, nn);
    for (int64_t o0 = 0; o0 < g.og; o0 += ob) {
      const int64_t oo = std::min(ob, g.og - o0);
      auto fc = fw.narrow(1, o0, oo).unsqueeze(0).unsqueeze(-1);         // [1, G, oo, K, 1]
      auto gc = go.narrow(0, n0, nn).narrow(2, o0, oo).unsqueeze(3);     // [nn, G, oo, 1, L]
      acc.add_(((fc - xc).clamp_(-1, 1).mul_(gc)).sum(2));
    }
  }
  auto dx = at::col2im(dcols.view({g.n, g.groups * g.k, g.l}), {g.h, g.w}, {g.kh, g.kw}, {1, 1},
                       {g.pad, g.pad}, {g.stride, g.stride});
  return {dx, df.view(f.sizes())};
}

struct AdderConv2d : public torch::autograd::Function<AdderConv2d> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& f, int64_t stride,
                            int64_t pad, int64_t groups, int64_t chunk) {
    auto g = geometry(x, f, stride, pad, groups);
    ctx->save_for_backward({x, f});
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["pad"] = pad;
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["chunk"] = chunk;
    at::NoGradGuard no_grad;
    return forward_impl(x.contiguous(), f.contiguous(), g, chunk);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& f = saved[1];
    auto g = geometry(x, f, ctx->saved_data["stride"].toInt(), ctx->saved_data["pad"].toInt(),
                      ctx->saved_data["groups"].toInt());
    at::NoGradGuard no_grad;
    auto [dx, df] = backward_impl(x.contiguous(), f.contiguous(), grad_out[0], g, ctx->saved_data["chunk"].toInt());
    return {dx, df, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

char* copy_message(const char* what) {
  const size_t len = std::strlen(what);
  char* out = static_cast<char*>(std::malloc(len + 1));
  if (out != nullptr) std::memcpy(out, what, len + 1);
  return out;
}

template <typename F>
at::Tensor* guarded(char** err, F&& body) {
  *err = nullptr;
  try {
    return new at::Tensor(body());
  } catch (const c10::Error& e) {
    *err = copy_message(e.what_without_backtrace());
  } catch (const std::exception& e) {
    *err = copy_message(e.what());
  } catch (...) {
    *err = copy_message("unknown C++ exception");
  }
  return nullptr;
}

}  // namespace

extern "C" {

// Differentiable adder convolution. Returns a new tensor, or nullptr with *err set.
// `chunk` bounds the floats of one temporary block of the pairwise computation.
at::Tensor* shiftadd_adder_conv2d(const at::Tensor* x, const at::Tensor* f, int64_t stride, int64_t pad,
                                  int64_t groups, int64_t chunk, char** err) {
  return guarded(err, [&] { return AdderConv2d::apply(*x, *f, stride, pad, groups, chunk); });
}

// The explicit backward, for tests: which = 0 gives dX, 1 gives dF.
at::Tensor* shiftadd_adder_conv2d_backward(const at::Tensor* x, const at::Tensor* f, const at::Tensor* gy,
                                           int64_t stride, int64_t pad, int64_t groups, int64_t chunk,
                                           int64_t which, char** err) {
  return guarded(err, [&] {
    auto g = geometry(*x, *f, stride, pad, groups);
    at::NoGradGuard no_grad;
    auto [dx, df] = backward_impl(x->contiguous(), f->contiguous(), *gy, g, chunk);
    return which == 0 ? dx : df;
  });
}

void shiftadd_free_error(char* err) { std::free(err); }

}  // extern "C"
