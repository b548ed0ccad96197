// AdderNet convolution as a libtorch autograd function (method.md §2, "Add").
//
//   Y[n,o,y,x] = -sum_{c,i,j} | X[n,c,y*s+i-p,x*s+j-p] - F[o,c,i,j] |      (groups supported)
//   dL/dF      =  sum_{n,l} dY[n,o,l] * (X_patch[n,k,l] - F[o,k])           (full precision)
//   dL/dX      =  col2im( sum_o dY[n,o,l] * clamp(F[o,k] - X_patch[n,k,l], -1, 1) )   (HardTanh)
//
// Three implementations: a direct CPU kernel for contiguous float32 (below, `fast::`); the tiled
// kernels of adder_tiled.h (`tiled::`), on CUDA through NVRTC (adder_cuda.cpp) and on the CPU by
// running each block's threads in turn (what the float64 tests check); and the reference
// formulation on ATen ops, for double on the CPU and wherever the CUDA kernels cannot run.
//
// The reference formulation on ATen ops: im2col, then the pairwise |X - F| in chunks over
// (batch, output channel) so that the [N, C_out, C_in*k*k, L] temporary never exists whole; its
// peak memory is bounded by `chunk` floats per block. Only x and F are saved for backward (the patches
// are recomputed), so a network of these layers keeps activation-sized state, like a conv.
// Exposed through a C ABI whose tensors are `at::Tensor*`, the same handles `tch` uses.

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <ATen/Parallel.h>

#include "adder_cuda.h"
#include "adder_tiled.h"
#include "ffi.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

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


// ---------------------------------------------------------------------------------------------
// Direct CPU kernel (float32). Per sample: im2col into a [K, L] buffer, then
//   forward  y[o, l]   = -sum_k |cols[k, l] - F[o, k]|          (4 outputs at a time, L-tiled)
//   backward dcols     = sum_o g[o, l] * clamp(F[o, k] - cols[k, l], -1, 1), scattered back (col2im)
//            dF[o, k] += sum_l g[o, l] * cols[k, l]              (then dF -= F * sum g)
// Samples are split across threads (torch's intra-op thread count); each thread owns its own
// buffers and its samples' outputs, and dF is reduced from per-thread partial sums. No temporary
// is larger than one sample's patches. The hot loops are compiled for AVX2 and a baseline.
namespace fast {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SHIFTADD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SHIFTADD_CLONES
#endif

constexpr int64_t kTile = 256;  // columns of L per tile: accumulators stay in L1

// The number of per-thread partial sums a parallel region over `n` items may use.
int64_t workers(int64_t n) { return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n)); }

// body(t, b, e) over [0, n) split into workers(n) contiguous ranges, the t-th range [b, e), run
// on ATen's intra-op pool (no threads started per call). Partial sums are indexed by the range,
// not by the thread that runs it, so they never race whichever thread takes which range.
void run_parallel(int64_t n, const std::function<void(int64_t, int64_t, int64_t)>& body) {
  const int64_t parts = workers(n);
  const int64_t per = (n + parts - 1) / parts;
  auto range = [&](int64_t t) { body(t, t * per, std::min(n, (t + 1) * per)); };
  if (parts == 1) {
    range(0);
    return;
  }
  at::parallel_for(0, parts, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) range(t);
  });
}

// cols[(c*kh + i)*kw + j][oy*wo + ox] = x[c][oy*s - p + i][ox*s - p + j] (0 outside), for one group.
void im2col(const float* x, float* cols, const Geometry& g, int64_t c0) {
  for (int64_t c = 0; c < g.cg; ++c) {
    const float* plane = x + (c0 + c) * g.h * g.w;
    for (int64_t i = 0; i < g.kh; ++i) {
      for (int64_t j = 0; j < g.kw; ++j) {
        float* row = cols + ((c * g.kh + i) * g.kw + j) * g.l;
        for (int64_t oy = 0; oy < g.ho; ++oy) {
          const int64_t iy = oy * g.stride - g.pad + i;
          float* out = row + oy * g.wo;
          if (iy < 0 || iy >= g.h) {
            std::fill(out, out + g.wo, 0.0f);
            continue;
          }
          const float* src = plane + iy * g.w;
          for (int64_t ox = 0; ox < g.wo; ++ox) {
            const int64_t ix = ox * g.stride - g.pad + j;
            out[ox] = (ix >= 0 && ix < g.w) ? src[ix] : 0.0f;
          }
        }
      }
    }
  }
}

void col2im_add(const float* cols, float* dx, const Geometry& g, int64_t c0) {
  for (int64_t c = 0; c < g.cg; ++c) {
    float* plane = dx + (c0 + c) * g.h * g.w;
    for (int64_t i = 0; i < g.kh; ++i) {
      for (int64_t j = 0; j < g.kw; ++j) {
        const float* row = cols + ((c * g.kh + i) * g.kw + j) * g.l;
        for (int64_t oy = 0; oy < g.ho; ++oy) {
          const int64_t iy = oy * g.stride - g.pad + i;
          if (iy < 0 || iy >= g.h) continue;
          float* dst = plane + iy * g.w;
          for (int64_t ox = 0; ox < g.wo; ++ox) {
            const int64_t ix = ox * g.stride - g.pad + j;
            if (ix >= 0 && ix < g.w) dst[ix] += row[oy * g.wo + ox];
          }
        }
      }
    }
  }
}

// y[o][l] = -sum_k |cols[k][l] - f[o][k]| for `og` outputs.
SHIFTADD_CLONES
void forward_group(const float* cols, const float* f, float* y, int64_t og, int64_t k_len, int64_t l_len) {
  float acc[4][kTile];
  for (int64_t l0 = 0; l0 < l_len; l0 += kTile) {
    const int64_t lt = std::min(kTile, l_len - l0);
    int64_t o = 0;
    for (; o + 4 <= og; o += 4) {
      std::memset(acc, 0, sizeof(acc));
      const float *f0 = f + o * k_len, *f1 = f0 + k_len, *f2 = f1 + k_len, *f3 = f2 + k_len;
      for (int64_t k = 0; k < k_len; ++k) {
        const float* row = cols + k * l_len + l0;
        const float a = f0[k], b = f1[k], c = f2[k], d = f3[k];
        for (int64_t l = 0; l < lt; ++l) {
          const float v = row[l];
          acc[0][l] += std::fabs(v - a);
          acc[1][l] += std::fabs(v - b);
          acc[2][l] += std::fabs(v - c);
          acc[3][l] += std::fabs(v - d);
        }
      }
      for (int q = 0; q < 4; ++q) {
        float* out = y + (o + q) * l_len + l0;
        for (int64_t l = 0; l < lt; ++l) out[l] = -acc[q][l];
      }
    }
    for (; o < og; ++o) {
      std::memset(acc[0], 0, sizeof(acc[0]));
      const float* fo = f + o * k_len;
      for (int64_t k = 0; k < k_len; ++k) {
        const float* row = cols + k * l_len + l0;
        const float a = fo[k];
        for (int64_t l = 0; l < lt; ++l) acc[0][l] += std::fabs(row[l] - a);
      }
      float* out = y + o * l_len + l0;
      for (int64_t l = 0; l < lt; ++l) out[l] = -acc[0][l];
    }
  }
}

// dcols[k][l] = sum_o gy[o][l] * clamp(f[o][k] - cols[k][l], -1, 1);  df[o][k] += sum_l gy[o][l] * cols[k][l].
SHIFTADD_CLONES
void backward_group(const float* cols, const float* f, const float* gy, float* dcols, float* df, int64_t og,
                    int64_t k_len, int64_t l_len) {
  for (int64_t k = 0; k < k_len; ++k) {
    const float* row = cols + k * l_len;
    float* drow = dcols + k * l_len;
    std::fill(drow, drow + l_len, 0.0f);
    for (int64_t o = 0; o < og; ++o) {
      const float fk = f[o * k_len + k];
      const float* grow = gy + o * l_len;
      float dot[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t l = 0;
      for (; l + 8 <= l_len; l += 8) {
        for (int q = 0; q < 8; ++q) {
          const float v = row[l + q], gv = grow[l + q];
          const float d = std::min(1.0f, std::max(-1.0f, fk - v));
          drow[l + q] += gv * d;
          dot[q] += gv * v;
        }
      }
      float tail = 0.0f;
      for (; l < l_len; ++l) {
        const float v = row[l], gv = grow[l];
        drow[l] += gv * std::min(1.0f, std::max(-1.0f, fk - v));
        tail += gv * v;
      }
      df[o * k_len + k] += ((dot[0] + dot[1]) + (dot[2] + dot[3])) + ((dot[4] + dot[5]) + (dot[6] + dot[7])) + tail;
    }
  }
}

// df[o][k] += sum_l gy[o][l] * cols[k][l] alone (no input gradient needed); the same sums in
// the same order as backward_group's.
SHIFTADD_CLONES
void backward_group_df(const float* cols, const float* gy, float* df, int64_t og, int64_t k_len, int64_t l_len) {
  for (int64_t k = 0; k < k_len; ++k) {
    const float* row = cols + k * l_len;
    for (int64_t o = 0; o < og; ++o) {
      const float* grow = gy + o * l_len;
      float dot[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t l = 0;
      for (; l + 8 <= l_len; l += 8) {
        for (int q = 0; q < 8; ++q) dot[q] += grow[l + q] * row[l + q];
      }
      float tail = 0.0f;
      for (; l < l_len; ++l) tail += grow[l] * row[l];
      df[o * k_len + k] += ((dot[0] + dot[1]) + (dot[2] + dot[3])) + ((dot[4] + dot[5]) + (dot[6] + dot[7])) + tail;
    }
  }
}

// Depthwise layers (one input and one output channel per group) skip im2col: each (sample,
// channel) plane is copied once into a zero-padded buffer and the k×k window is walked directly.
// Padding positions hold 0, exactly as the im2col formulation's padded columns do.
void pad_plane(const float* x, float* xp, const Geometry& g, int64_t wp) {
  const int64_t hp = g.h + 2 * g.pad;
  std::fill(xp, xp + hp * wp, 0.0f);
  for (int64_t y = 0; y < g.h; ++y) std::memcpy(xp + (y + g.pad) * wp + g.pad, x + y * g.w, g.w * sizeof(float));
}

SHIFTADD_CLONES
void dw_forward_plane(const float* __restrict xp, const float* __restrict f, float* __restrict y,
                      const Geometry& g, int64_t wp) {
  const int64_t s = g.stride;
  for (int64_t oy = 0; oy < g.ho; ++oy) {
    float* __restrict out = y + oy * g.wo;
    std::fill(out, out + g.wo, 0.0f);
    for (int64_t i = 0; i < g.kh; ++i) {
      const float* __restrict row = xp + (oy * s + i) * wp;
      for (int64_t j = 0; j < g.kw; ++j) {
        const float fv = f[i * g.kw + j];
        const float* __restrict src = row + j;
        if (s == 1) {
          for (int64_t ox = 0; ox < g.wo; ++ox) out[ox] += std::fabs(src[ox] - fv);
        } else {
          for (int64_t ox = 0; ox < g.wo; ++ox) out[ox] += std::fabs(src[ox * s] - fv);
        }
      }
    }
    for (int64_t ox = 0; ox < g.wo; ++ox) out[ox] = -out[ox];
  }
}

// dxp (padded) += gy * clamp(f - x, -1, 1);  df += sum gy * (x - f).
SHIFTADD_CLONES
void dw_backward_plane(const float* __restrict xp, const float* __restrict f, const float* __restrict gy,
                       float* __restrict dxp, float* __restrict df, const Geometry& g, int64_t wp) {
  const int64_t s = g.stride;
  for (int64_t oy = 0; oy < g.ho; ++oy) {
    const float* __restrict gr = gy + oy * g.wo;
    for (int64_t i = 0; i < g.kh; ++i) {
      const float* __restrict row = xp + (oy * s + i) * wp;
      float* __restrict drow = dxp + (oy * s + i) * wp;
      for (int64_t j = 0; j < g.kw; ++j) {
        const float fv = f[i * g.kw + j];
        float dot = 0.0f;
        if (s == 1) {
          for (int64_t ox = 0; ox < g.wo; ++ox) {
            const float v = row[ox + j], gv = gr[ox];
            drow[ox + j] += gv * std::min(1.0f, std::max(-1.0f, fv - v));
            dot += gv * (v - fv);
          }
        } else {
          for (int64_t ox = 0; ox < g.wo; ++ox) {
            const float v = row[ox * s + j], gv = gr[ox];
            drow[ox * s + j] += gv * std::min(1.0f, std::max(-1.0f, fv - v));
            dot += gv * (v - fv);
          }
        }
        df[i * g.kw + j] += dot;
      }
    }
  }
}

// df += sum gy * (x - f) alone (no input gradient needed).
SHIFTADD_CLONES
void dw_backward_plane_df(const float* __restrict xp, const float* __restrict f, const float* __restrict gy,
                          float* __restrict df, const Geometry& g, int64_t wp) {
  const int64_t s = g.stride;
  for (int64_t oy = 0; oy < g.ho; ++oy) {
    const float* __restrict gr = gy + oy * g.wo;
    for (int64_t i = 0; i < g.kh; ++i) {
      const float* __restrict row = xp + (oy * s + i) * wp;
      for (int64_t j = 0; j < g.kw; ++j) {
        const float fv = f[i * g.kw + j];
        float dot = 0.0f;
        for (int64_t ox = 0; ox < g.wo; ++ox) dot += gr[ox] * (row[ox * s + j] - fv);
        df[i * g.kw + j] += dot;
      }
    }
  }
}

bool depthwise(const Geometry& g) { return g.cg == 1 && g.og == 1; }

// A 1×1, stride-1, unpadded layer: its im2col columns are its input as it lies in memory.
bool pointwise(const Geometry& g) { return g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0; }

void dw_forward(const float* xp, const float* fp, float* yp, const Geometry& g) {
  const int64_t wp = g.w + 2 * g.pad, hp = g.h + 2 * g.pad;
  run_parallel(g.n * g.c, [&](int64_t, int64_t b, int64_t e) {
    std::vector<float> pad(static_cast<size_t>(hp * wp));
    for (int64_t nc = b; nc < e; ++nc) {
      const int64_t c = nc % g.c;
      pad_plane(xp + nc * g.h * g.w, pad.data(), g, wp);
      dw_forward_plane(pad.data(), fp + c * g.k, yp + nc * g.l, g, wp);
    }
  });
}

// Per-thread dF partial sums go to pp[t][c][k] (already complete: no correction term).
// `dxp` null: only dF.
void dw_backward(const float* xp, const float* fp, const float* gp, float* dxp, float* pp, const Geometry& g) {
  const int64_t wp = g.w + 2 * g.pad, hp = g.h + 2 * g.pad;
  run_parallel(g.n * g.c, [&](int64_t t, int64_t b, int64_t e) {
    std::vector<float> pad(static_cast<size_t>(hp * wp)), dpad(static_cast<size_t>(hp * wp));
    float* df = pp + t * g.o * g.k;
    for (int64_t nc = b; nc < e; ++nc) {
      const int64_t c = nc % g.c;
      pad_plane(xp + nc * g.h * g.w, pad.data(), g, wp);
      if (dxp == nullptr) {
        dw_backward_plane_df(pad.data(), fp + c * g.k, gp + nc * g.l, df + c * g.k, g, wp);
        continue;
      }
      std::fill(dpad.begin(), dpad.end(), 0.0f);
      dw_backward_plane(pad.data(), fp + c * g.k, gp + nc * g.l, dpad.data(), df + c * g.k, g, wp);
      float* dx = dxp + nc * g.h * g.w;
      for (int64_t y = 0; y < g.h; ++y)
        std::memcpy(dx + y * g.w, dpad.data() + (y + g.pad) * wp + g.pad, g.w * sizeof(float));
    }
  });
}

// Depthwise, channels-last: for small planes the per-plane loops above are too short to
// vectorise, so the sample is transposed to [H, W, C] and every tap runs over all C channels at
// once. Padding taps see X = 0: they add |F| forward and −gy·F to dF backward.
SHIFTADD_CLONES
void dwcl_forward_sample(const float* __restrict xt, const float* __restrict ft, float* __restrict yt,
                         const Geometry& g) {
  const int64_t C = g.c;
  for (int64_t oy = 0; oy < g.ho; ++oy) {
    for (int64_t ox = 0; ox < g.wo; ++ox) {
      float* __restrict out = yt + (oy * g.wo + ox) * C;
      std::fill(out, out + C, 0.0f);
      for (int64_t i = 0; i < g.kh; ++i) {
        const int64_t iy = oy * g.stride - g.pad + i;
        for (int64_t j = 0; j < g.kw; ++j) {
          const int64_t ix = ox * g.stride - g.pad + j;
          const float* __restrict fr = ft + (i * g.kw + j) * C;
          if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) {
            for (int64_t c = 0; c < C; ++c) out[c] += std::fabs(fr[c]);
          } else {
            const float* __restrict xr = xt + (iy * g.w + ix) * C;
            for (int64_t c = 0; c < C; ++c) out[c] += std::fabs(xr[c] - fr[c]);
          }
        }
      }
      for (int64_t c = 0; c < C; ++c) out[c] = -out[c];
    }
  }
}

SHIFTADD_CLONES
void dwcl_backward_sample(const float* __restrict xt, const float* __restrict ft, const float* __restrict gyt,
                          float* __restrict dxt, float* __restrict dft, const Geometry& g) {
  const int64_t C = g.c;
  for (int64_t oy = 0; oy < g.ho; ++oy) {
    for (int64_t ox = 0; ox < g.wo; ++ox) {
      const float* __restrict gr = gyt + (oy * g.wo + ox) * C;
      for (int64_t i = 0; i < g.kh; ++i) {
        const int64_t iy = oy * g.stride - g.pad + i;
        for (int64_t j = 0; j < g.kw; ++j) {
          const int64_t ix = ox * g.stride - g.pad + j;
          const float* __restrict fr = ft + (i * g.kw + j) * C;
          float* __restrict dfr = dft + (i * g.kw + j) * C;
          if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) {
            for (int64_t c = 0; c < C; ++c) dfr[c] -= gr[c] * fr[c];
          } else {
            const float* __restrict xr = xt + (iy * g.w + ix) * C;
            float* __restrict dxr = dxt + (iy * g.w + ix) * C;
            for (int64_t c = 0; c < C; ++c) {
              const float v = xr[c], fv = fr[c], gv = gr[c];
              dxr[c] += gv * std::min(1.0f, std::max(-1.0f, fv - v));
              dfr[c] += gv * (v - fv);
            }
          }
        }
      }
    }
  }
}

// df alone (no input gradient needed); a separate function so that dwcl_backward_sample, compiled
// with fast-math, keeps the code (and the roundings) it had.
SHIFTADD_CLONES
void dwcl_backward_sample_df(const float* __restrict xt, const float* __restrict ft, const float* __restrict gyt,
                             float* __restrict dft, const Geometry& g) {
  const int64_t C = g.c;
  for (int64_t oy = 0; oy < g.ho; ++oy) {
    for (int64_t ox = 0; ox < g.wo; ++ox) {
      const float* __restrict gr = gyt + (oy * g.wo + ox) * C;
      for (int64_t i = 0; i < g.kh; ++i) {
        const int64_t iy = oy * g.stride - g.pad + i;
        for (int64_t j = 0; j < g.kw; ++j) {
          const int64_t ix = ox * g.stride - g.pad + j;
          const float* __restrict fr = ft + (i * g.kw + j) * C;
          float* __restrict dfr = dft + (i * g.kw + j) * C;
          if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) {
            for (int64_t c = 0; c < C; ++c) dfr[c] -= gr[c] * fr[c];
          } else {
            const float* __restrict xr = xt + (iy * g.w + ix) * C;
            for (int64_t c = 0; c < C; ++c) dfr[c] += gr[c] * (xr[c] - fr[c]);
          }
        }
      }
    }
  }
}

// Small planes (and enough channels to fill vectors) take the channels-last path.
bool channels_last(const Geometry& g) { return g.h * g.w < 256 && g.c >= 8; }

at::Tensor dwcl_forward(const at::Tensor& x, const at::Tensor& f, const Geometry& g) {
  auto xt = x.permute({0, 2, 3, 1}).contiguous();
  auto ft = f.reshape({g.c, g.k}).t().contiguous();
  auto yt = at::empty({g.n, g.ho, g.wo, g.c}, x.options());
  const float* xp = xt.data_ptr<float>();
  const float* fp = ft.data_ptr<float>();
  float* yp = yt.data_ptr<float>();
  run_parallel(g.n, [&](int64_t, int64_t b, int64_t e) {
    for (int64_t n = b; n < e; ++n) dwcl_forward_sample(xp + n * g.h * g.w * g.c, fp, yp + n * g.l * g.c, g);
  });
  return yt.permute({0, 3, 1, 2}).contiguous();
}

std::pair<at::Tensor, at::Tensor> dwcl_backward(const at::Tensor& x, const at::Tensor& f, const at::Tensor& gy,
                                                const Geometry& g, bool need_dx) {
  auto xt = x.permute({0, 2, 3, 1}).contiguous();
  auto gyt = gy.permute({0, 2, 3, 1}).contiguous();
  auto ft = f.reshape({g.c, g.k}).t().contiguous();
  auto dxt = need_dx ? at::zeros({g.n, g.h, g.w, g.c}, x.options()) : at::Tensor();
  auto partial = at::zeros({workers(g.n), g.k, g.c}, x.options());
  const float* xp = xt.data_ptr<float>();
  const float* gp = gyt.data_ptr<float>();
  const float* fp = ft.data_ptr<float>();
  float* dxp = need_dx ? dxt.data_ptr<float>() : nullptr;
  float* pp = partial.data_ptr<float>();
  run_parallel(g.n, [&](int64_t t, int64_t b, int64_t e) {
    for (int64_t n = b; n < e; ++n) {
      const float* xs = xp + n * g.h * g.w * g.c;
      const float* gs = gp + n * g.l * g.c;
      if (dxp == nullptr) {
        dwcl_backward_sample_df(xs, fp, gs, pp + t * g.k * g.c, g);
      } else {
        dwcl_backward_sample(xs, fp, gs, dxp + n * g.h * g.w * g.c, pp + t * g.k * g.c, g);
      }
    }
  });
  auto dx = need_dx ? dxt.permute({0, 3, 1, 2}).contiguous() : at::Tensor();
  auto df = partial.sum(0).t().contiguous().view(f.sizes());
  return {dx, df};
}

bool applies(const at::Tensor& x, const at::Tensor& f) {
  return x.device().is_cpu() && f.device().is_cpu() && x.scalar_type() == at::kFloat &&
         f.scalar_type() == at::kFloat;
}

at::Tensor forward(const at::Tensor& x_in, const at::Tensor& f_in, const Geometry& g) {
  auto x = x_in.contiguous();
  auto f = f_in.contiguous();
  if (depthwise(g) && channels_last(g)) return dwcl_forward(x, f, g);
  auto y = at::empty({g.n, g.o, g.ho, g.wo}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* fp = f.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  if (depthwise(g)) {
    dw_forward(xp, fp, yp, g);
    return y;
  }
  const bool direct = pointwise(g);
  run_parallel(g.n, [&](int64_t, int64_t b, int64_t e) {
    std::vector<float> cols(direct ? 0 : static_cast<size_t>(g.k * g.l));
    for (int64_t n = b; n < e; ++n) {
      for (int64_t grp = 0; grp < g.groups; ++grp) {
        const float* c = xp + (n * g.c + grp * g.cg) * g.l;  // a 1×1 layer's columns are its input
        if (!direct) {
          im2col(xp + n * g.c * g.h * g.w, cols.data(), g, grp * g.cg);
          c = cols.data();
        }
        forward_group(c, fp + grp * g.og * g.k, yp + (n * g.o + grp * g.og) * g.l, g.og, g.k, g.l);
      }
    }
  });
  return y;
}

// {dX (undefined without `need_dx`), dF}.
std::pair<at::Tensor, at::Tensor> backward(const at::Tensor& x_in, const at::Tensor& f_in, const at::Tensor& gy_in,
                                           const Geometry& g, bool need_dx) {
  auto x = x_in.contiguous();
  auto f = f_in.contiguous();
  auto gy = gy_in.contiguous().to(at::kFloat);
  if (depthwise(g) && channels_last(g)) return dwcl_backward(x, f, gy, g, need_dx);
  auto dx = need_dx ? at::zeros_like(x) : at::Tensor();
  const int64_t extent = depthwise(g) ? g.n * g.c : g.n;  // what run_parallel splits
  auto partial = at::zeros({workers(extent), g.o, g.k}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* fp = f.data_ptr<float>();
  const float* gp = gy.data_ptr<float>();
  float* dxp = need_dx ? dx.data_ptr<float>() : nullptr;
  float* pp = partial.data_ptr<float>();
  if (depthwise(g)) {
    dw_backward(xp, fp, gp, dxp, pp, g);
    return {dx, partial.sum(0).view(f.sizes())};
  }
  const bool direct = pointwise(g);
  run_parallel(g.n, [&](int64_t t, int64_t b, int64_t e) {
    const size_t kl = static_cast<size_t>(g.k * g.l);
    std::vector<float> cols(direct ? 0 : kl), dcols(direct || !need_dx ? 0 : kl);
    float* df = pp + t * g.o * g.k;
    for (int64_t n = b; n < e; ++n) {
      for (int64_t grp = 0; grp < g.groups; ++grp) {
        // A 1×1 layer's columns are its input, and their gradient is the input's.
        const int64_t at = (n * g.c + grp * g.cg) * g.l;
        const float* c = xp + at;
        float* dc = dxp != nullptr ? dxp + at : nullptr;
        if (!direct) {
          im2col(xp + n * g.c * g.h * g.w, cols.data(), g, grp * g.cg);
          c = cols.data();
          dc = dxp != nullptr ? dcols.data() : nullptr;
        }
        const float* fg = fp + grp * g.og * g.k;
        const float* gg = gp + (n * g.o + grp * g.og) * g.l;
        if (dc == nullptr) {
          backward_group_df(c, gg, df + grp * g.og * g.k, g.og, g.k, g.l);
        } else {
          backward_group(c, fg, gg, dc, df + grp * g.og * g.k, g.og, g.k, g.l);
        }
        if (!direct && dxp != nullptr) col2im_add(dcols.data(), dxp + n * g.c * g.h * g.w, g, grp * g.cg);
      }
    }
  });
  // dF = sum_n g·colsᵀ − F · sum_{n,l} g
  auto gsum = gy.view({g.n, g.o, g.l}).sum(at::IntArrayRef{0, 2}).view({g.o, 1});
  auto df = partial.sum(0) - f.view({g.o, g.k}) * gsum;
  return {dx, df.view(f.sizes())};
}

}  // namespace fast

// ---------------------------------------------------------------------------------------------
// The tiled kernels (adder_tiled.h): on CUDA as NVRTC-compiled kernels, on the CPU with each
// block's threads run in turn between the same barriers. Beyond their outputs, forward and dX
// allocate nothing but one block's tiles (16 KiB in float64); dF is ATen's multiplicative
// weight gradient (cuDNN's implicit GEMM on CUDA) less F times the sum of dY.
namespace tiled {

sa_tiled::Geo geo(const Geometry& g) {
  return {g.n, g.c, g.h, g.w, g.o, g.cg, g.og, g.kh, g.kw, g.ho, g.wo, g.l, g.k, g.groups, g.stride, g.pad};
}

template <typename T>
void host_forward(const T* x, const T* f, T* y, const sa_tiled::Geo& g) {
  using namespace sa_tiled;
  if (direct(g)) {
    at::parallel_for(0, g.n * g.o * g.l, 256, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) y[i] = forward_at(x, f, g, i);
    });
    return;
  }
  at::parallel_for(0, tiled_blocks(g), 1, [&](int64_t b, int64_t e) {
    std::vector<T> fs(TK * TO), xs(TK * TL), acc(THREADS * MICRO * MICRO);
    for (int64_t block = b; block < e; ++block) {
      const Tile t = tile_of(g, block);
      std::fill(acc.begin(), acc.end(), T(0));
      for (int64_t k0 = 0; k0 < g.k; k0 += TK) {
        for (int tid = 0; tid < THREADS; ++tid) load(tid, x, f, g, t, k0, fs.data(), xs.data());
        for (int tid = 0; tid < THREADS; ++tid) accumulate(tid, fs.data(), xs.data(), acc.data() + tid * MICRO * MICRO);
      }
      for (int tid = 0; tid < THREADS; ++tid) store(tid, acc.data() + tid * MICRO * MICRO, y, g, t);
    }
  });
}

template <typename T>
void host_input_grad(const T* x, const T* f, const T* gy, T* dx, const sa_tiled::Geo& g) {
  at::parallel_for(0, g.n * g.c * g.h * g.w, 256, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dx[i] = sa_tiled::input_grad_at(x, f, gy, g, i);
  });
}

void check_operands(const at::Tensor& x, const at::Tensor& f) {
  TORCH_CHECK(x.scalar_type() == f.scalar_type() &&
                  (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble),
              "adder_conv2d: the tiled kernels take float32 or float64 input and weight of one type, got ",
              x.scalar_type(), " and ", f.scalar_type());
  TORCH_CHECK(x.device() == f.device(), "adder_conv2d: input on ", x.device(), ", weight on ", f.device());
}

void check_fits(const Geometry& g) {
  TORCH_CHECK(sa_tiled::fits(geo(g)), "adder_conv2d: one sample of [", g.c, ", ", g.h, ", ", g.w, "] -> [", g.o, ", ",
              g.ho, ", ", g.wo, "] is too large for the tiled kernels' 32-bit indices");
}

// Contiguous x and f.
at::Tensor forward(const at::Tensor& x, const at::Tensor& f, const Geometry& g) {
  check_operands(x, f);
  check_fits(g);
  auto y = at::empty({g.n, g.o, g.ho, g.wo}, x.options());
  const auto sg = geo(g);
  if (x.is_cuda()) {
    sa_cuda::forward(x, f, y, sg);
    return y;
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "adder_tiled_forward", [&] {
    host_forward<scalar_t>(x.data_ptr<scalar_t>(), f.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), sg);
  });
  return y;
}

at::Tensor input_grad(const at::Tensor& x, const at::Tensor& f, const at::Tensor& gy, const Geometry& g) {
  auto dx = at::empty_like(x);
  const auto sg = geo(g);
  if (x.is_cuda()) {
    sa_cuda::input_grad(x, f, gy, dx, sg);
    return dx;
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "adder_tiled_input_grad", [&] {
    host_input_grad<scalar_t>(x.data_ptr<scalar_t>(), f.data_ptr<scalar_t>(), gy.data_ptr<scalar_t>(),
                              dx.data_ptr<scalar_t>(), sg);
  });
  return dx;
}

// dF = sum_{n,l} dY * P - F * sum_{n,l} dY: the first term is a multiplicative conv's weight gradient.
at::Tensor weight_grad(const at::Tensor& x, const at::Tensor& f, const at::Tensor& gy, const Geometry& g) {
  auto parts = at::convolution_backward(gy, x, f, std::nullopt, {g.stride, g.stride}, {g.pad, g.pad}, {1, 1},
                                        /*transposed=*/false, {0, 0}, g.groups, {false, true, false});
  auto gsum = gy.sum(at::IntArrayRef{0, 2, 3}).view({g.o, 1, 1, 1});
  return std::get<1>(parts) - f * gsum;
}

// {dX (undefined without `need_dx`), dF} for contiguous x and f.
std::pair<at::Tensor, at::Tensor> backward(const at::Tensor& x, const at::Tensor& f, const at::Tensor& gy_in,
                                           const Geometry& g, bool need_dx) {
  check_operands(x, f);
  check_fits(g);
  auto gy = gy_in.to(x.scalar_type()).contiguous();
  return {need_dx ? input_grad(x, f, gy, g) : at::Tensor(), weight_grad(x, f, gy, g)};
}

}  // namespace tiled

// Which implementation runs a call: `fast` for CPU float32, `tiled` on CUDA where its kernels
// load, the ATen reference otherwise (Auto). Tests and benches name one.
enum class Impl : int64_t { Auto = 0, Reference = 1, Tiled = 2, Fast = 3 };

Impl choose(const at::Tensor& x, const at::Tensor& f, const Geometry& g) {
  if (fast::applies(x, f)) return Impl::Fast;
  if (x.is_cuda() && f.is_cuda() && x.scalar_type() == f.scalar_type() && sa_tiled::fits(tiled::geo(g)) &&
      sa_cuda::available(x))
    return Impl::Tiled;
  return Impl::Reference;
}

at::Tensor forward_with(Impl impl, const at::Tensor& x, const at::Tensor& f, const Geometry& g, int64_t chunk) {
  if (impl == Impl::Auto) impl = choose(x, f, g);
  switch (impl) {
    case Impl::Tiled:
      return tiled::forward(x.contiguous(), f.contiguous(), g);
    case Impl::Reference:
      return forward_impl(x.contiguous(), f.contiguous(), g, chunk);
    case Impl::Fast:
    case Impl::Auto:
      break;
  }
  TORCH_CHECK(fast::applies(x, f), "adder_conv2d: the fast kernel takes CPU float32 tensors");
  return fast::forward(x, f, g);
}

std::pair<at::Tensor, at::Tensor> backward_with(Impl impl, const at::Tensor& x, const at::Tensor& f,
                                                const at::Tensor& gy, const Geometry& g, int64_t chunk,
                                                bool need_dx) {
  if (impl == Impl::Auto) impl = choose(x, f, g);
  switch (impl) {
    case Impl::Tiled:
      return tiled::backward(x.contiguous(), f.contiguous(), gy, g, need_dx);
    case Impl::Reference: {
      auto [dx, df] = backward_impl(x.contiguous(), f.contiguous(), gy, g, chunk);
      return {need_dx ? dx : at::Tensor(), df};
    }
    case Impl::Fast:
    case Impl::Auto:
      break;
  }
  TORCH_CHECK(fast::applies(x, f), "adder_conv2d: the fast kernel takes CPU float32 tensors");
  return fast::backward(x, f, gy, g, need_dx);
}

// AdderNet's adaptive gradient scaling of one call (method.md §2), applied to dF of the weight that
// call used: dF <- eta * sqrt(numel(F)) * dF / max(||dF||_2, 1e-12). With `relative`, also times the RMS
// of F, so that the per-step update relative to the weights is what AdderNet has with its N(0,1)
// weights (fidelity.md, item 2). Stays on the device: no host synchronisation.
at::Tensor adaptive_scale(const at::Tensor& df, const at::Tensor& f, double eta, bool relative) {
  auto factor = (eta * std::sqrt(static_cast<double>(df.numel()))) / df.norm().clamp_min(1e-12);
  if (relative) factor = factor * f.square().mean().sqrt();
  return df * factor;
}

struct AdderConv2d : public torch::autograd::Function<AdderConv2d> {
  // `sink`: a tensor whose values are not read (an empty one that needs no gradient for none). It
  // receives the *raw* dF, so that what produced it (a remap's own parameters, which map F but are
  // not Add weights) learns from the unscaled gradient while `f` gets AdderNet's scaled one.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& f, const at::Tensor& sink,
                            int64_t stride, int64_t pad, int64_t groups, int64_t chunk, double eta, bool relative) {
    (void)sink;
    auto g = geometry(x, f, stride, pad, groups);
    ctx->save_for_backward({x, f});
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["pad"] = pad;
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["chunk"] = chunk;
    ctx->saved_data["eta"] = eta;
    ctx->saved_data["relative"] = relative;
    at::NoGradGuard no_grad;
    return forward_with(Impl::Auto, x, f, g, chunk);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& f = saved[1];
    auto g = geometry(x, f, ctx->saved_data["stride"].toInt(), ctx->saved_data["pad"].toInt(),
                      ctx->saved_data["groups"].toInt());
    at::NoGradGuard no_grad;
    const bool need_dx = ctx->needs_input_grad(0);
    auto [dx, df] = backward_with(Impl::Auto, x, f, grad_out[0], g, ctx->saved_data["chunk"].toInt(), need_dx);
    const double eta = ctx->saved_data["eta"].toDouble();
    at::Tensor raw = ctx->needs_input_grad(2) ? df : at::Tensor();
    if (eta > 0.0) df = adaptive_scale(df, f, eta, ctx->saved_data["relative"].toBool());
    return {dx, df, raw, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

template <typename F>
at::Tensor* guarded(char** err, F&& body) {
  return shiftadd_ffi::guarded<at::Tensor*>(err, nullptr, [&] { return new at::Tensor(body()); });
}

}  // namespace

extern "C" {

// Differentiable adder convolution. Returns a new tensor, or nullptr with *err set.
// `chunk` bounds the floats of one temporary block of the pairwise computation.
// `eta` > 0 applies AdderNet's adaptive scaling to dF in backward (`relative`: times the RMS of F);
// `sink` (nullable) receives the raw dF (see AdderConv2d::forward).
at::Tensor* shiftadd_adder_conv2d(const at::Tensor* x, const at::Tensor* f, const at::Tensor* sink, int64_t stride,
                                  int64_t pad, int64_t groups, int64_t chunk, double eta, int32_t relative,
                                  char** err) {
  return guarded(err, [&] {
    // No sink: an empty tensor that needs no gradient (autograd functions take no undefined inputs).
    const at::Tensor none = sink != nullptr ? at::Tensor() : at::empty({0}, f->options());
    return AdderConv2d::apply(*x, *f, sink != nullptr ? *sink : none, stride, pad, groups, chunk, eta, relative != 0);
  });
}

// One part of the op by a named implementation (0: what training runs, 1: the ATen reference,
// 2: the tiled kernels, on the CPU or CUDA, 3: the CPU float32 kernel), for tests and benches: which = 0 gives Y, 1 dX,
// 2 dF (`gy` unused for Y).
at::Tensor* shiftadd_adder_conv2d_part(const at::Tensor* x, const at::Tensor* f, const at::Tensor* gy,
                                       int64_t stride, int64_t pad, int64_t groups, int64_t chunk, int64_t impl,
                                       int64_t which, char** err) {
  return guarded(err, [&] {
    TORCH_CHECK(impl >= 0 && impl <= 3, "adder_conv2d: no implementation ", impl);
    TORCH_CHECK(which >= 0 && which <= 2, "adder_conv2d: no part ", which);
    auto g = geometry(*x, *f, stride, pad, groups);
    at::NoGradGuard no_grad;
    const auto chosen = static_cast<Impl>(impl);
    if (which == 0) return forward_with(chosen, *x, *f, g, chunk);
    auto [dx, df] = backward_with(chosen, *x, *f, *gy, g, chunk, /*need_dx=*/which == 1);
    return which == 1 ? dx : df;
  });
}

// The tiled kernels' PTX for compute capability `arch` ("90"), compiled by NVRTC (no device
// needed), as a malloc'd string; nullptr with *err set where NVRTC is missing or fails.
char* shiftadd_adder_cuda_ptx(const char* arch, char** err) {
  *err = nullptr;
  std::string why;
  const std::string ptx = sa_cuda::ptx_for(arch, why);
  if (ptx.empty()) {
    *err = shiftadd_ffi::copy_message(why.c_str());
    return nullptr;
  }
  return shiftadd_ffi::copy_message(ptx.c_str());
}

// Free and total bytes of CUDA device `index`; -1 with *err set where it cannot be asked.
int32_t shiftadd_cuda_mem_info(int64_t index, uint64_t* free, uint64_t* total, char** err) {
  *err = nullptr;
  std::string why;
  if (!sa_cuda::mem_info(static_cast<int>(index), *free, *total, why)) {
    *err = shiftadd_ffi::copy_message(why.c_str());
    return -1;
  }
  return 0;
}

// Whether the tiled kernels run on `t`'s CUDA device (loading and compiling them on first use).
int32_t shiftadd_adder_cuda_available(const at::Tensor* t) { return sa_cuda::available(*t) ? 1 : 0; }

void shiftadd_free_error(char* err) { std::free(err); }

}  // extern "C"
