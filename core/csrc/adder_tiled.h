// The Add convolution for the GPU (issue 42, item 4), one source for two compilers.
//
// This file is compiled twice: into adder.cpp as ordinary C++ (the host runs every block and
// every thread of a launch in turn, in float32 or float64: what the float64 reference tests run),
// and, as a string, by NVRTC at run time on a CUDA device (adder_cuda.cpp), where the kernels at
// the end wrap the same functions with block indices and barriers. No header is included: NVRTC
// has no standard library.
//
//   forward  Y[n,o,l] = -sum_k |P[n,k,l] - F[o,k]|       P = the patch matrix (im2col, 0 in padding)
//   dX       dX[n,c,y,x] = sum over the (i,j,o) whose output reads (y,x) of dY[n,o,..] * clamp(F[o,c,i,j] - X[n,c,y,x], -1, 1)
//
// Forward is a GEMM with |a - b| in place of a*b: a block computes a TO x TL tile of one group's
// output — TO channels by TL columns, a column being one (sample, position) of the whole batch,
// so that late layers' small maps still fill a tile — walking K in steps of TK through two tiles
// in shared memory, each thread accumulating a 4 x 4 micro-tile in registers. P is never formed: each tile loads its patch
// values straight from X (implicit im2col). Where a group has few output channels (depthwise)
// that tile would be mostly empty, so each output element is its own thread (`direct`).
// dX needs no scatter: an input pixel's patch value is the pixel itself, so its gradient is one
// sum over the outputs that read it, one thread per input element; nothing of size
// [C_out x C*k^2 x positions] — or even [C*k^2 x positions] — exists in either direction.
// (dF = the multiplicative conv's weight gradient - F * sum dY: adder.cpp asks ATen for it.)
#ifndef SHIFTADD_ADDER_TILED_H
#define SHIFTADD_ADDER_TILED_H

#ifdef __CUDACC_RTC__
#define SA_FN __device__ __forceinline__
#else
#define SA_FN inline
#endif

namespace sa_tiled {

typedef long long i64;

// A launch's geometry (the same fields and order on host and device: kernels take it by value).
struct Geo {
  i64 n, c, h, w, o, cg, og, kh, kw, ho, wo, l, k, groups, stride, pad;
};

enum : int {
  TO = 64,       // output channels per tile
  TL = 64,       // output positions per tile
  TK = 16,       // reduction step
  THREADS = 256, // per block: 16 x 16, each a 4 x 4 micro-tile
  SIDE = 16,
  MICRO = 4,
  DIRECT_THREADS = 256,
};

// Below this many output channels per group the tiled forward wastes most of its tile.
SA_FN bool direct(const Geo& g) { return g.og < 16; }

SA_FN i64 div_up(i64 a, i64 b) { return (a + b - 1) / b; }

// Whether one sample's sizes fit the kernels' 32-bit index arithmetic.
SA_FN bool fits(const Geo& g) {
  const i64 limit = 0x7fffffffLL;
  return g.c * g.h * g.w < limit && g.o * g.l < limit && g.k < limit && g.o * g.k < limit && g.n * g.l < limit;
}

// Blocks of the tiled forward: one per (group, column tile, channel tile); columns run over the
// batch's (sample, position) pairs.
SA_FN i64 tiled_blocks(const Geo& g) { return g.groups * div_up(g.n * g.l, TL) * div_up(g.og, TO); }

// P[n, grp, k, l]: X at the input pixel that output position l reads through weight tap k.
// Index arithmetic within one sample is 32-bit (the launcher checks a sample's sizes fit): a
// 64-bit division costs a GPU several times a 32-bit one, and this runs per loaded element.
template <typename T>
SA_FN T patch(const T* x, const Geo& g, i64 n, i64 grp, int k, int l) {
  const int taps = (int)(g.kh * g.kw), kw = (int)g.kw, wo = (int)g.wo;
  const int c = k / taps, r = k - c * taps, i = r / kw, j = r - i * kw;
  const int oy = l / wo, ox = l - oy * wo;
  const int iy = oy * (int)g.stride - (int)g.pad + i, ix = ox * (int)g.stride - (int)g.pad + j;
  if (iy < 0 || iy >= (int)g.h || ix < 0 || ix >= (int)g.w) return T(0);
  return x[((n * g.c + grp * g.cg + c) * g.h + iy) * g.w + ix];
}

// A block's place: its group, first output channel (in the group) and first column.
struct Tile {
  i64 grp, o0, col0;
};

SA_FN Tile tile_of(const Geo& g, i64 block) {
  const i64 ct = div_up(g.n * g.l, TL), ot = div_up(g.og, TO);
  Tile t;
  const i64 bc = block % ct;
  const i64 rest = block / ct;
  t.o0 = (rest % ot) * TO;
  t.grp = rest / ot;
  t.col0 = bc * TL;
  return t;
}

// Phase 1 of a K step: thread `tid` loads its share of fs[TK][TO] and xs[TK][TL] (zeros past the
// edges, where |0 - 0| adds nothing). Consecutive threads read consecutive k of F and l of X.
template <typename T>
SA_FN void load(int tid, const T* x, const T* f, const Geo& g, const Tile& t, i64 k0, T* fs, T* xs) {
  for (int e = tid; e < TK * TO; e += THREADS) {
    const int kk = e % TK, oo = e / TK;
    const i64 o = t.o0 + oo, k = k0 + kk;
    fs[kk * TO + oo] = (o < g.og && k < g.k) ? f[(t.grp * g.og + o) * g.k + k] : T(0);
  }
  for (int e = tid; e < TK * TL; e += THREADS) {
    const int ll = e % TL, kk = e / TL;
    const i64 col = t.col0 + ll, k = k0 + kk;
    T v = T(0);
    if (col < g.n * g.l && k < g.k) {
      const int c32 = (int)col, l32 = (int)g.l, n = c32 / l32;  // the launcher checks n * l fits 32 bits
      v = patch(x, g, n, t.grp, (int)k, c32 - n * l32);
    }
    xs[kk * TL + ll] = v;
  }
}

// Phase 2: thread `tid` adds |x - f| over the step into its micro-tile acc[MICRO * MICRO]
// (rows: channels tid/16 + 16a, columns: positions tid%16 + 16b).
template <typename T>
SA_FN void accumulate(int tid, const T* fs, const T* xs, T* acc) {
  const int ty = tid / SIDE, tx = tid % SIDE;
  for (int kk = 0; kk < TK; ++kk) {
    T fv[MICRO], xv[MICRO];
    for (int a = 0; a < MICRO; ++a) fv[a] = fs[kk * TO + ty + SIDE * a];
    for (int b = 0; b < MICRO; ++b) xv[b] = xs[kk * TL + tx + SIDE * b];
    for (int a = 0; a < MICRO; ++a) {
      for (int b = 0; b < MICRO; ++b) {
        const T d = xv[b] - fv[a];
        acc[a * MICRO + b] += d < T(0) ? -d : d;
      }
    }
  }
}

template <typename T>
SA_FN void store(int tid, const T* acc, T* y, const Geo& g, const Tile& t) {
  const int ty = tid / SIDE, tx = tid % SIDE;
  for (int a = 0; a < MICRO; ++a) {
    const i64 o = t.o0 + ty + SIDE * a;
    if (o >= g.og) continue;
    for (int b = 0; b < MICRO; ++b) {
      const i64 col = t.col0 + tx + SIDE * b;
      if (col >= g.n * g.l) continue;
      const int c32 = (int)col, l32 = (int)g.l, n = c32 / l32, l = c32 - n * l32;
      y[((i64)n * g.o + t.grp * g.og + o) * g.l + l] = -acc[a * MICRO + b];
    }
  }
}

// The direct forward: output element `idx` of [N, O, L].
template <typename T>
SA_FN T forward_at(const T* x, const T* f, const Geo& g, i64 idx) {
  const i64 per = g.o * g.l, n = idx / per;
  const int within = (int)(idx - n * per), l = within % (int)g.l, oc = within / (int)g.l;
  const i64 grp = oc / (int)g.og;
  const T* fo = f + oc * g.k;
  T sum = T(0);
  for (int k = 0; k < (int)g.k; ++k) {
    const T d = patch(x, g, n, grp, k, l) - fo[k];
    sum += d < T(0) ? -d : d;
  }
  return -sum;
}

// dX at input element `idx` of [N, C, H, W].
template <typename T>
SA_FN T input_grad_at(const T* x, const T* f, const T* gy, const Geo& g, i64 idx) {
  const i64 per = g.c * g.h * g.w, n = idx / per;
  const int within = (int)(idx - n * per), w = (int)g.w, h = (int)g.h;
  const int ix = within % w, rest = within / w, iy = rest % h, c = rest / h;
  const int cg = (int)g.cg, og = (int)g.og, kh = (int)g.kh, kw = (int)g.kw, s = (int)g.stride, pad = (int)g.pad;
  const int grp = c / cg, cc = c - grp * cg;
  const T xv = x[idx];
  const i64 taps = kh * kw, fstride = cg * taps, gstride = g.l;
  T sum = T(0);
  for (int i = 0; i < kh; ++i) {
    const int ty = iy + pad - i;
    if (ty < 0) break;  // and for every later i
    const int oy = s == 1 ? ty : ty / s;
    if (oy * s != ty || oy >= (int)g.ho) continue;
    for (int j = 0; j < kw; ++j) {
      const int tx = ix + pad - j;
      if (tx < 0) break;
      const int ox = s == 1 ? tx : tx / s;
      if (ox * s != tx || ox >= (int)g.wo) continue;
      const T* fp = f + ((i64)grp * og * cg + cc) * taps + i * kw + j;    // F[grp*og + o, cc, i, j]
      const T* gp = gy + (n * g.o + (i64)grp * og) * g.l + oy * g.wo + ox;  // dY[n, grp*og + o, oy, ox]
      for (int o = 0; o < og; ++o) {
        T d = fp[o * fstride] - xv;
        d = d < T(-1) ? T(-1) : (d > T(1) ? T(1) : d);
        sum += gp[o * gstride] * d;
      }
    }
  }
  return sum;
}

}  // namespace sa_tiled

#ifdef __CUDACC_RTC__
// The kernels NVRTC compiles (adder_cuda.cpp launches them by these names).
namespace sa_tiled {

template <typename T>
__device__ void tiled_forward(const T* x, const T* f, T* y, Geo g) {
  __shared__ T fs[TK * TO];
  __shared__ T xs[TK * TL];
  const int tid = threadIdx.x;
  const Tile t = tile_of(g, blockIdx.x);
  T acc[MICRO * MICRO];
  for (int q = 0; q < MICRO * MICRO; ++q) acc[q] = T(0);
  for (i64 k0 = 0; k0 < g.k; k0 += TK) {
    load(tid, x, f, g, t, k0, fs, xs);
    __syncthreads();
    accumulate(tid, fs, xs, acc);
    __syncthreads();
  }
  store(tid, acc, y, g, t);
}

}  // namespace sa_tiled

#define SA_KERNELS(T, SUFFIX)                                                                            \
  extern "C" __global__ void __launch_bounds__(sa_tiled::THREADS)                                      \
      sa_add_forward_tiled_##SUFFIX(const T* x, const T* f, T* y, sa_tiled::Geo g) {                  \
    sa_tiled::tiled_forward<T>(x, f, y, g);                                                             \
  }                                                                                                     \
  extern "C" __global__ void sa_add_forward_direct_##SUFFIX(const T* x, const T* f, T* y,            \
                                                            sa_tiled::Geo g) {                         \
    const sa_tiled::i64 idx = (sa_tiled::i64)blockIdx.x * blockDim.x + threadIdx.x;                   \
    if (idx < g.n * g.o * g.l) y[idx] = sa_tiled::forward_at<T>(x, f, g, idx);                          \
  }                                                                                                     \
  extern "C" __global__ void sa_add_input_grad_##SUFFIX(const T* x, const T* f, const T* gy, T* dx,  \
                                                        sa_tiled::Geo g) {                             \
    const sa_tiled::i64 idx = (sa_tiled::i64)blockIdx.x * blockDim.x + threadIdx.x;                   \
    if (idx < g.n * g.c * g.h * g.w) dx[idx] = sa_tiled::input_grad_at<T>(x, f, gy, g, idx);            \
  }

SA_KERNELS(float, f32)
SA_KERNELS(double, f64)
#endif  // __CUDACC_RTC__

#endif  // SHIFTADD_ADDER_TILED_H
