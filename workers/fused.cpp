// BatchNorm (training mode) followed by ReLU, forward and backward, each in two passes over the activations; and the
// same after a convolution of one input channel shared by every output channel, recomputed instead of stored.
//
// The batched models' activations on a CPU are channels-last: N rows (batch × positions) of C channels (the K cells'
// channels side by side), one row contiguous. ATen runs BatchNorm and ReLU as separate operators, forward and
// backward, each with its own passes over memory and its own output; here the statistics take one pass, the
// normalization and the ReLU one more, and the backward recomputes the ReLU's mask from the input instead of
// reading the output. The inner loops run over a row's channels a machine vector at a time.
//
// cnn1d's first layer convolves one input channel, the same batch for every cell, into K·C channels: its output is
// 5 MiB for 16 cells where its input is 20 KiB. The second pair of operators never stores that output: each pass
// recomputes a slab of it from the input (KW multiply-adds per value, cheaper than reading it back from memory), and
// the backward is one pass over the output's gradient, the convolution's weight gradient from sums over the rows
// (conv_backward_k), so the gradient of the convolution's output is not stored either. Reading and writing memory is
// what these operators' time goes to.
//
// Both passes split the rows among torch's intra-op threads (at::parallel_for), in contiguous ranges as oneDNN's
// convolutions on either side split their batch, so that each core finds the rows it works on in its own cache
// (splitting the channels instead was slower on two threads than PyTorch's operators). Sums over rows come from float
// partial sums over fixed blocks of rows, added in double in block order: the same numbers whatever the number of
// threads.
//
// The grouped convolutions between those layers (K cells side by side, each cell's C_in channels into its own C_out;
// height 1, channels-last) are here too: oneDNN runs them at 15-30 GFLOP/s on one core of an AMD EPYC (AVX2) where its
// ungrouped ones reach 50-70, because each group is a tiny problem (16 × 16 channels). Each convolution here is a
// sum of small matrix products (the rows of a tile × C_in channels × 16 output channels, per tap) computed in
// registers: a tile of up to kR output rows × 16 channels of accumulators, a broadcast input value times a vector of
// 16 weights per multiply-add, the weights of one cell's tap (C_in × 16 floats) from L1. Forward and backward-data are
// the same kernel (the backward-data's rows of one residue modulo the stride see the output gradient's rows one
// apart); the weight gradient keeps a tile of (tap, input channel) pairs × 16 output channels in registers over a
// chunk of examples copied zero-padded and contiguous. Written with GCC's vector extensions at this CPU's widest
// vector (-march=native: 8 floats with AVX2, 16 with AVX-512), no intrinsics.
//
// Built on first use by workers/fused.py (torch.utils.cpp_extension, with OpenMP: torch's own runtime); float32 only.

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

void check(const torch::Tensor& x, int64_t dim, const std::vector<torch::Tensor>& per_channel, int64_t c) {
  TORCH_CHECK(x.dim() == dim && x.is_contiguous() && x.scalar_type() == torch::kFloat && x.device().is_cpu(),
              "batch_norm_relu: x must be a contiguous ", dim, "-D float32 CPU tensor");
  for (const auto& t : per_channel) {
    TORCH_CHECK(t.dim() == 1 && t.is_contiguous() && t.scalar_type() == torch::kFloat && t.size(0) == c,
                "batch_norm_relu: per-channel tensors must be contiguous float32 of size C");
  }
}

// ---- Machine vectors ----

#ifdef __AVX512F__
constexpr int kLanes = 16;  // floats per machine vector
constexpr int kTile = 12;   // grouped convolutions' rows per tile: 12 accumulators + weights + a broadcast of 32
#else
constexpr int kLanes = 8;
constexpr int kTile = 6;  // 6 rows × 2 vectors = 12 accumulators of 16 registers
#endif
typedef float Vec __attribute__((vector_size(kLanes * 4)));
typedef float VecU __attribute__((vector_size(kLanes * 4), aligned(4)));  // the same, at any float's address

inline Vec vload(const float* p) { return *reinterpret_cast<const VecU*>(p); }
inline void vstore(float* p, Vec v) { *reinterpret_cast<VecU*>(p) = v; }

// BatchNorm's loops run over a slab of channels at a time, a machine vector (T = Vec) or, past the last whole vector,
// one channel (T = float): see sweep.
template <class T>
T load(const float* p);
template <>
inline Vec load<Vec>(const float* p) {
  return vload(p);
}
template <>
inline float load<float>(const float* p) {
  return *p;
}
inline void store(float* p, Vec v) { vstore(p, v); }
inline void store(float* p, float v) { *p = v; }
// a·b + c rounded once: GCC contracts the vector expression into the machine's fused multiply-add.
inline float fmadd(float a, float b, float c) { return std::fma(a, b, c); }
inline Vec fmadd(Vec a, Vec b, Vec c) { return a * b + c; }
inline Vec fmadd(Vec a, float b, Vec c) { return a * b + c; }  // b in every lane
// g where p > 0, else 0.
inline float where_positive(float p, float g) { return p > 0.f ? g : 0.f; }
inline Vec where_positive(Vec p, Vec g) { return p > Vec{} ? g : Vec{}; }

// f.template operator()<T>(j) for each slab of c channels, j its first channel.
template <class F>
inline void for_slabs(int64_t c, const F& f) {
  int64_t j = 0;
  for (; j + kLanes <= c; j += kLanes) f.template operator()<Vec>(j);
  for (; j < c; ++j) f.template operator()<float>(j);
}

// The pre-activation (x - mean)·a + beta with a = invstd·gamma: centred first, as PyTorch does, so that a mean far
// from zero costs no precision; the same rounding (one fused multiply-add) in the forward and the backward, so that
// the backward's recomputed ReLU mask is exactly the forward's.
template <class T>
inline T pre(T x, T mean, T a, T beta) {
  return fmadd(x - mean, a, beta);
}

constexpr int64_t kBlock = 64;  // rows per float partial sum: a float sum over thousands of rows would lose more than
                                // the kernels' other roundings; accumulating in double in the loop runs at half width
constexpr int64_t kRows = 256;  // rows per thread at least (256 rows of 256 channels: 256 KiB)

// The rows BatchNorm normalizes, stored: an N × C tensor x; block(i0, i1) is rows [i0, i1) (at most kBlock), whose
// at<T>(i, j) is row i's slab of channels from j (sweep).
struct StoredRows {
  static constexpr bool kBySlab = false;  // see sweep
  const float* x;
  int64_t c;

  struct Block {
    const float* x;
    int64_t c;
    template <class T>
    T at(int64_t i, int64_t j) const {
      return load<T>(x + i * c + j);
    }
  };
  Block block(int64_t /*i0*/, int64_t /*i1*/) const { return {x, c}; }
};

// ... or computed: a convolution (width KW, no bias) of a batch of 1-D signals (batch × len, here zero-padded:
// batch × plen) into C channels, each with its own weights (wt: KW × C, tap-major), row i being example i / lo at
// output position i % lo. window(i) points at the KW inputs row i sees.
template <int KW>
struct ConvolvedRows {
  static constexpr bool kBySlab = true;
  std::vector<float> padded;
  const float* wt;
  int64_t plen, lo, stride, c;

  const float* window(int64_t i) const { return padded.data() + (i / lo) * plen + (i % lo) * stride; }

  struct Block {
    const ConvolvedRows* rows;
    int64_t i0;
    const float* win[kBlock];  // row i0 + r's window
    const float* window(int64_t i) const { return win[i - i0]; }
    template <class T>
    T at(int64_t i, int64_t j) const {
      const float* v = window(i);
      T acc{};
      for (int t = 0; t < KW; ++t) acc = fmadd(load<T>(rows->wt + t * rows->c + j), v[t], acc);
      return acc;
    }
  };
  Block block(int64_t i0, int64_t i1) const {
    Block b{this, i0, {}};
    int64_t e = i0 / lo, o = i0 % lo;
    for (int64_t i = i0; i < i1; ++i) {
      b.win[i - i0] = padded.data() + e * plen + o * stride;
      if (++o == lo) o = 0, ++e;
    }
    return b;
  }
};

// Per-channel sums over all n rows: add(i0, i1, sums) writes rows [i0, i1)'s (a block's) width float sums; returns
// the width sums of all rows in double.
template <class Add>
std::vector<double> block_sums(int64_t n, int64_t width, const Add& add) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<float> parts(blocks * width, 0.f);
  at::parallel_for(0, blocks, kRows / kBlock, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) add(b * kBlock, std::min(n, (b + 1) * kBlock), parts.data() + b * width);
  });
  std::vector<double> sums(width, 0.0);
  for (int64_t b = 0; b < blocks; ++b) {
    const float* p = parts.data() + b * width;
    for (int64_t q = 0; q < width; ++q) sums[q] += p[q];
  }
  return sums;
}

// f(i0, i1) for every block of rows, the blocks split among the threads.
template <class F>
void each_block(int64_t n, const F& f) {
  at::parallel_for(0, (n + kBlock - 1) / kBlock, kRows / kBlock, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) f(b * kBlock, std::min(n, (b + 1) * kBlock));
  });
}

// body.template operator()<T>(acc, blk, i, j) for each row i of block blk (rows [i0, i1)) and each slab of channels
// from j, acc being the slab's nacc sums, kept at p + q·c + j (q < nacc; p may be null where nacc is 0). Stored rows
// go in memory order, the sums in L1 (on cnn1d's layers 2-3, streaming the rows was 10-18 % faster than slab by slab);
// computed rows slab by slab, the sums and the slab's weights in registers.
template <int nacc, class Rows, class Body>
inline void sweep(const Rows& rows, int64_t i0, int64_t i1, int64_t c, float* p, const Body& body) {
  const auto blk = rows.block(i0, i1);
  if constexpr (Rows::kBySlab) {
    for_slabs(c, [&]<class T>(int64_t j) {
      T acc[nacc + 1] = {};  // + 1: no array of size 0 where there are no sums
      for (int64_t i = i0; i < i1; ++i) body.template operator()<T>(acc, blk, i, j);
      for (int q = 0; q < nacc; ++q) store(p + q * c + j, acc[q]);
    });
  } else {
    for (int64_t i = i0; i < i1; ++i) {
      for_slabs(c, [&]<class T>(int64_t j) {
        T acc[nacc + 1];
        for (int q = 0; q < nacc; ++q) acc[q] = load<T>(p + q * c + j);
        body.template operator()<T>(acc, blk, i, j);
        for (int q = 0; q < nacc; ++q) store(p + q * c + j, acc[q]);
      });
    }
  }
}

// Where the output's (and its gradient's) row i, channel j is: rows × C, one row contiguous (groups = 1), or each
// group of C / groups channels as its own rows × (C / groups) block, the groups one after the other (groups × rows ×
// C / groups: cnn1d's last layer, each cell's features as its linear head reads them, which saved the copy between
// the two, forward and backward: 0.8 ms of 11 per step for 16 cells).
struct Layout {
  std::vector<int64_t> col;  // channel j's place in row 0
  int64_t row;               // from one row to the next
  int64_t at(int64_t i, int64_t j) const { return col[j] + i * row; }
};

Layout layout(int64_t n, int64_t c, int64_t groups) {
  // A slab of channels (sweep) in one group, so contiguous there.
  TORCH_CHECK(groups >= 1 && c % groups == 0 && (groups == 1 || (c / groups) % kLanes == 0),
              "batch_norm_relu: channels per group must be a multiple of ", kLanes);
  const int64_t cg = c / groups;
  Layout out{std::vector<int64_t>(c), cg};
  for (int64_t j = 0; j < c; ++j) out.col[j] = (j / cg) * n * cg + j % cg;
  return out;
}

// Per-channel mean and (biased) variance over n rows, in double.
struct Moments {
  std::vector<double> mean, var;
};

// Of stored rows: one pass of sums of (x - shift) and its square, shifted by the first row (no cancellation when the
// mean dwarfs the spread), float within a block of rows, double across blocks.
inline Moments moments(const StoredRows& rows, int64_t n, int64_t c) {
  const float* S = rows.x;  // row 0
  const auto sums = block_sums(n, 2 * c, [&](int64_t i0, int64_t i1, float* p) {
    sweep<2>(rows, i0, i1, c, p, [&]<class T>(T* acc, const auto& blk, int64_t i, int64_t j) {
      const T d = blk.template at<T>(i, j) - load<T>(S + j);
      acc[0] += d;
      acc[1] += d * d;
    });
  });
  Moments out{std::vector<double>(c), std::vector<double>(c)};
  for (int64_t j = 0; j < c; ++j) {
    const double m = sums[j] / n;
    out.mean[j] = S[j] + m;
    out.var[j] = std::max(0.0, sums[c + j] / n - m * m);
  }
  return out;
}

// The input windows' means v̄_t and centred products C_st = Σ_rows (v_s - v̄_s)·(v_t - v̄_t) over n rows of a
// convolution, in double: the same for every channel.
template <int KW>
struct Windows {
  double mean[KW];
  double cov[KW][KW];
};

template <int KW>
Windows<KW> windows(const ConvolvedRows<KW>& rows, int64_t n) {
  Windows<KW> w{};
  for (int64_t i = 0; i < n; ++i) {
    const float* v = rows.window(i);
    for (int s = 0; s < KW; ++s) w.mean[s] += v[s];
  }
  for (int s = 0; s < KW; ++s) w.mean[s] /= n;
  for (int64_t i = 0; i < n; ++i) {
    const float* v = rows.window(i);
    for (int s = 0; s < KW; ++s) {
      for (int u = 0; u < KW; ++u) w.cov[s][u] += (v[s] - w.mean[s]) * (v[u] - w.mean[u]);
    }
  }
  return w;
}

// Of computed rows, from the windows alone, no pass over the rows: channel j's values are w_j·v over the windows v, so
// their mean is w_j·v̄ and their variance w_jᵀ·C·w_j / n (cnn1d's first layer's forward: one pass instead of two).
template <int KW>
Moments moments(const ConvolvedRows<KW>& rows, int64_t n, int64_t c) {
  const auto w = windows(rows, n);
  Moments out{std::vector<double>(c), std::vector<double>(c)};
  for (int64_t j = 0; j < c; ++j) {
    double m = 0.0, var = 0.0;
    for (int s = 0; s < KW; ++s) {
      const double ws = rows.wt[s * c + j];
      m += ws * w.mean[s];
      for (int u = 0; u < KW; ++u) var += ws * rows.wt[u * c + j] * w.cov[s][u];
    }
    out.mean[j] = m;
    out.var[j] = std::max(0.0, var / n);
  }
  return out;
}

// The forward over n rows: returns (y: groups × n × C / groups as laid out by layout(n, C, groups), mean, invstd);
// updates running_mean and running_var in place (unbiased variance), as torch.nn.functional.batch_norm does in
// training mode.
template <class Rows>
std::vector<torch::Tensor> normalize(const Rows& rows, int64_t n, int64_t c, const torch::Tensor& gamma,
                                     const torch::Tensor& beta, torch::Tensor& running_mean,
                                     torch::Tensor& running_var, double momentum, double eps, int64_t groups = 1) {
  TORCH_CHECK(n > 1, "batch_norm_relu: expected more than 1 value per channel when training");
  const auto options = gamma.options();
  const auto mv = moments(rows, n, c);
  auto mean = torch::empty({c}, options), invstd = torch::empty({c}, options);
  float* M = mean.data_ptr<float>();
  float* I = invstd.data_ptr<float>();
  const float* G = gamma.data_ptr<float>();
  const float* B = beta.data_ptr<float>();
  float* RM = running_mean.data_ptr<float>();
  float* RV = running_var.data_ptr<float>();
  std::vector<float> a(c);
  for (int64_t j = 0; j < c; ++j) {
    const double var = mv.var[j];
    M[j] = static_cast<float>(mv.mean[j]);
    I[j] = static_cast<float>(1.0 / std::sqrt(var + eps));
    RM[j] = static_cast<float>((1 - momentum) * RM[j] + momentum * M[j]);
    RV[j] = static_cast<float>((1 - momentum) * RV[j] + momentum * var * n / (n - 1));
    a[j] = I[j] * G[j];
  }
  const auto out = layout(n, c, groups);
  auto y = torch::empty({groups, n, c / groups}, options);
  float* Y = y.data_ptr<float>();
  const float* A = a.data();
  each_block(n, [&](int64_t i0, int64_t i1) {
    sweep<0>(rows, i0, i1, c, nullptr, [&]<class T>(T*, const auto& blk, int64_t i, int64_t j) {
      const T v = pre(blk.template at<T>(i, j), load<T>(M + j), load<T>(A + j), load<T>(B + j));
      store(Y + out.at(i, j), where_positive(v, v));
    });
  });
  return {y, mean, invstd};
}

// The backward's first pass and what follows from it: dL/dgamma, dL/dbeta, and the coefficients of dL/dx,
// k1·(g·mask - k2 - (x - mean)·k3).
struct Backward {
  torch::Tensor grad_gamma, grad_beta;
  std::vector<float> a, k1, k2, k3;
};

template <class Rows>
Backward backward_sums(const Rows& rows, const float* GY, const Layout& gy, int64_t n, int64_t c,
                       const torch::Tensor& gamma, const torch::Tensor& beta, const torch::Tensor& mean,
                       const torch::Tensor& invstd) {
  const float* G = gamma.data_ptr<float>();
  const float* B = beta.data_ptr<float>();
  const float* M = mean.data_ptr<float>();
  const float* I = invstd.data_ptr<float>();
  Backward out{torch::empty({c}, gamma.options()), torch::empty({c}, gamma.options()),
               std::vector<float>(c), std::vector<float>(c), std::vector<float>(c), std::vector<float>(c)};
  for (int64_t j = 0; j < c; ++j) out.a[j] = I[j] * G[j];
  const float* A = out.a.data();
  // The sums of the gradient under the ReLU's mask, and of it times (x - mean).
  const auto sums = block_sums(n, 2 * c, [&](int64_t i0, int64_t i1, float* p) {
    sweep<2>(rows, i0, i1, c, p, [&]<class T>(T* acc, const auto& blk, int64_t i, int64_t j) {
      const T m = load<T>(M + j), xi = blk.template at<T>(i, j);
      const T gm = where_positive(pre(xi, m, load<T>(A + j), load<T>(B + j)), load<T>(GY + gy.at(i, j)));
      acc[0] += gm;
      acc[1] += gm * (xi - m);
    });
  });
  float* GG = out.grad_gamma.data_ptr<float>();
  float* GB = out.grad_beta.data_ptr<float>();
  for (int64_t j = 0; j < c; ++j) {
    GG[j] = static_cast<float>(sums[c + j] * I[j]);
    GB[j] = static_cast<float>(sums[j]);
    out.k1[j] = G[j] * I[j];
    out.k2[j] = static_cast<float>(sums[j] / n);
    out.k3[j] = static_cast<float>(static_cast<double>(I[j]) * I[j] * sums[c + j] / n);
  }
  return out;
}

template <int KW>
ConvolvedRows<KW> convolved(const torch::Tensor& x, const torch::Tensor& wt, int64_t stride, int64_t pad) {
  const int64_t batch = x.size(0), len = x.size(1), plen = len + 2 * pad;
  TORCH_CHECK(stride >= 1 && pad >= 0 && plen >= KW, "conv_batch_norm_relu: bad stride or padding");
  ConvolvedRows<KW> rows{std::vector<float>(batch * plen, 0.f), wt.data_ptr<float>(), plen, (plen - KW) / stride + 1,
                         stride, wt.size(1)};
  const float* X = x.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b) std::copy_n(X + b * len, len, rows.padded.data() + b * plen + pad);
  return rows;
}

template <int KW>
std::vector<torch::Tensor> conv_forward_k(const torch::Tensor& x, const torch::Tensor& weight, int64_t stride,
                                          int64_t pad, const torch::Tensor& gamma, const torch::Tensor& beta,
                                          torch::Tensor& running_mean, torch::Tensor& running_var, double momentum,
                                          double eps) {
  const auto wt = weight.t().contiguous();  // KW × C: a tap's weights for all channels side by side
  const auto rows = convolved<KW>(x, wt, stride, pad);
  auto out = normalize(rows, x.size(0) * rows.lo, rows.c, gamma, beta, running_mean, running_var, momentum, eps);
  out[0] = out[0].view({-1, rows.c});  // one group: the rows
  return out;
}

template <int KW>
std::vector<torch::Tensor> conv_backward_k(const torch::Tensor& grad_y, const torch::Tensor& x,
                                           const torch::Tensor& weight, int64_t stride, int64_t pad,
                                           const torch::Tensor& gamma, const torch::Tensor& beta,
                                           const torch::Tensor& mean, const torch::Tensor& invstd) {
  const auto wt = weight.t().contiguous();
  const auto rows = convolved<KW>(x, wt, stride, pad);
  const int64_t n = x.size(0) * rows.lo, c = rows.c;
  TORCH_CHECK(grad_y.dim() == 2 && grad_y.size(0) == n && grad_y.size(1) == c && grad_y.is_contiguous() &&
                  grad_y.scalar_type() == torch::kFloat,
              "conv_batch_norm_relu: grad_y must be contiguous float32 of the output's shape");
  const float* GY = grad_y.data_ptr<float>();
  const float* G = gamma.data_ptr<float>();
  const float* B = beta.data_ptr<float>();
  const float* M = mean.data_ptr<float>();
  const float* I = invstd.data_ptr<float>();
  std::vector<float> a(c);
  for (int64_t j = 0; j < c; ++j) a[j] = I[j] * G[j];
  const float* A = a.data();
  // Σ_rows (x_j - mean_j)·v_t = Σ_s w_js·C_st (windows: C, v̄).
  const auto win = windows(rows, n);
  float vbar_f[KW];
  for (int s = 0; s < KW; ++s) vbar_f[s] = static_cast<float>(win.mean[s]);
  // One pass: with gm the gradient under the ReLU's mask and ṽ = v - v̄, dL/dz = k1·(gm - k2 - (x - mean)·k3) (k2, k3
  // from this pass's sums) gives dL/dw[j, t] = Σ dL/dz·v_t = k1·(Σ gm·ṽ_t - k3·Σ (x - mean)·ṽ_t), the k2 term
  // vanishing against ṽ's zero sum: the sums Σ gm, Σ gm·(x - mean) and Σ gm·ṽ_t take the one pass over dL/dy that
  // BatchNorm's first needs (a second pass computing dL/dz row by row read dL/dy again: 5 MiB for 16 cells).
  const auto sums = block_sums(n, (2 + KW) * c, [&](int64_t i0, int64_t i1, float* p) {
    float centred[kBlock][KW];
    for (int64_t i = i0; i < i1; ++i) {
      const float* v = rows.window(i);
      for (int t = 0; t < KW; ++t) centred[i - i0][t] = v[t] - vbar_f[t];
    }
    sweep<2 + KW>(rows, i0, i1, c, p, [&]<class T>(T* acc, const auto& blk, int64_t i, int64_t j) {
      const T m = load<T>(M + j), xi = blk.template at<T>(i, j);
      const T gm = where_positive(pre(xi, m, load<T>(A + j), load<T>(B + j)), load<T>(GY + i * c + j));
      // The next block's row, this slab: going slab by slab over rows 1 KiB apart, the hardware's prefetchers did not
      // keep up (cnn1d's 16 cells, one thread, dL/dy not in cache: 1.5 ms without, 1.0 with).
      __builtin_prefetch(GY + (i + kBlock) * c + j);
      acc[0] += gm;
      acc[1] += gm * (xi - m);
      for (int t = 0; t < KW; ++t) acc[2 + t] = fmadd(gm, centred[i - i0][t], acc[2 + t]);
    });
  });
  auto grad_gamma = torch::empty({c}, gamma.options()), grad_beta = torch::empty({c}, gamma.options());
  auto grad_w = torch::empty({c, KW}, gamma.options());
  float* GG = grad_gamma.data_ptr<float>();
  float* GB = grad_beta.data_ptr<float>();
  float* GW = grad_w.data_ptr<float>();
  const float* W = weight.data_ptr<float>();  // C × KW
  for (int64_t j = 0; j < c; ++j) {
    GG[j] = static_cast<float>(sums[c + j] * I[j]);
    GB[j] = static_cast<float>(sums[j]);
    const double k1 = static_cast<double>(G[j]) * I[j];
    const double k3 = static_cast<double>(I[j]) * I[j] * sums[c + j] / n;
    for (int t = 0; t < KW; ++t) {
      double q = 0.0;  // Σ (x_j - mean_j)·ṽ_t
      for (int s = 0; s < KW; ++s) q += W[j * KW + s] * win.cov[s][t];
      GW[j * KW + t] = static_cast<float>(k1 * (sums[(2 + t) * c + j] - k3 * q));
    }
  }
  return {grad_w, grad_gamma, grad_beta};
}

// ---- Grouped convolutions of channels-last rows (height 1) ----

constexpr int kOut = 16;                 // output channels per block: a tile's row is kOut / kLanes vectors
constexpr int kParts = kOut / kLanes;
constexpr int kMaxTaps = 16;             // the widest convolution (Python checks it first)
constexpr int64_t kChunk = 8;            // examples per chunk of the weight gradient (in L2 for 16 cells)

// Asks for columns [col, col + width) of rows [first, last) of a rows × row_len array (clipped to its rows) to be
// brought into cache, a 64-byte line at a time. The kernels read a cell's slice of each row, one line for 16
// channels, from a tensor the previous operator wrote: without this, on inputs not in cache, the forward ran 2.6 ms
// against 1.5 ms with it, the backward-data 2.1 against 1.8 (cnn1d's second layer, one thread; the weight gradient,
// which reads its rows in order, gained nothing).
inline void prefetch_rows(const float* base, int64_t first, int64_t last, int64_t rows, int64_t row_len, int64_t col,
                          int64_t width) {
  for (int64_t row = std::max<int64_t>(first, 0); row < std::min(last, rows); ++row) {
    for (int64_t c = 0; c < width; c += 16) __builtin_prefetch(base + row * row_len + col + c);
  }
}

// f(first, size) for n rows in tiles of at most kTile, as even as possible (20 rows: 5 5 5 5, not 6 6 6 2: a tile
// of 2 rows has too few accumulators to hide the multiply-add's latency).
template <class F>
void tiles(int64_t n, const F& f) {
  const int64_t count = (n + kTile - 1) / kTile;
  int64_t first = 0;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t size = n / count + (i < n % count);
    f(first, static_cast<int>(size));
    first += size;
  }
}

// dst[r][0:16] = Σ_t Σ_j src[t·kTile + r][off + j] · w[t][j·16 : j·16 + 16] for r < R: each tap's source rows (a
// zero row where the tap falls in the padding) times that tap's cs × 16 weights.
template <int R>
inline void conv_tile(int taps, const float* const* src, int64_t off, const float* const* w, int64_t cs,
                      float* const* dst) {
  Vec acc[R][kParts];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < kParts; ++v) acc[r][v] = Vec{};
  for (int t = 0; t < taps; ++t) {
    const float* s[R];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) s[r] = src[t * kTile + r] + off;
    const float* wt = w[t];
    for (int64_t j = 0; j < cs; ++j) {
      Vec wv[kParts];
      for (int v = 0; v < kParts; ++v) wv[v] = vload(wt + j * kOut + v * kLanes);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const float a = s[r][j];
        for (int v = 0; v < kParts; ++v) acc[r][v] += a * wv[v];
      }
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < kParts; ++v) vstore(dst[r] + v * kLanes, acc[r][v]);
}

template <int R = kTile>
void conv_tile_n(int n, int taps, const float* const* src, int64_t off, const float* const* w, int64_t cs,
                 float* const* dst) {
  if constexpr (R > 1) {
    if (n < R) return conv_tile_n<R - 1>(n, taps, src, off, w, cs, dst);
  }
  conv_tile<R>(taps, src, off, w, cs, dst);
}

// acc[r][0:16] += Σ_e Σ_i x[e·x_example + i·step + r] · gy[(e·count + i)·16 + 0:16] over e < examples,
// i < count, for r < R: the accumulators stay in registers over all the examples.
template <int R>
inline void wgrad_tile(const float* x, int64_t x_example, const float* gy, int64_t examples, int64_t count,
                       int64_t step, float* acc_mem) {
  Vec acc[R][kParts];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < kParts; ++v) acc[r][v] = vload(acc_mem + r * kOut + v * kLanes);
  for (int64_t e = 0; e < examples; ++e) {
    const float* xe = x + e * x_example;
    const float* ge = gy + e * count * kOut;
    for (int64_t i = 0; i < count; ++i) {
      Vec gv[kParts];
      for (int v = 0; v < kParts; ++v) gv[v] = vload(ge + i * kOut + v * kLanes);
      const float* xi = xe + i * step;
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const float a = xi[r];
        for (int v = 0; v < kParts; ++v) acc[r][v] += a * gv[v];
      }
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < kParts; ++v) vstore(acc_mem + r * kOut + v * kLanes, acc[r][v]);
}

template <int R = kTile>
void wgrad_tile_n(int n, const float* x, int64_t x_example, const float* gy, int64_t examples, int64_t count,
                  int64_t step, float* acc_mem) {
  if constexpr (R > 1) {
    if (n < R) return wgrad_tile_n<R - 1>(n, x, x_example, gy, examples, count, step, acc_mem);
  }
  wgrad_tile<R>(x, x_example, gy, examples, count, step, acc_mem);
}

// n floats (a multiple of kLanes) from src to dst, inline: std::copy_n called memmove for each cell's 16 channels of
// each row (cnn1d's 16 cells, second layer, one thread: the weight gradient 1.83 -> 1.55 ms, third 0.85 -> 0.66).
inline void copy_floats(const float* src, int64_t n, float* dst) {
  for (int64_t j = 0; j < n; j += kLanes) vstore(dst + j, vload(src + j));
}

// The geometry of a grouped convolution of b × len rows of groups·ci channels into groups·co channels.
struct Grouped {
  int64_t b, len, groups, ci, co, taps, stride, pad, lo;
};

Grouped grouped(const torch::Tensor& x, const torch::Tensor& weight, int64_t groups, int64_t stride, int64_t pad) {
  TORCH_CHECK(x.dim() == 3 && x.is_contiguous() && x.scalar_type() == torch::kFloat && x.device().is_cpu(),
              "grouped_conv1d: x must be contiguous float32 CPU rows (batch × positions × channels)");
  TORCH_CHECK(weight.dim() == 3 && weight.is_contiguous() && weight.scalar_type() == torch::kFloat,
              "grouped_conv1d: weight must be contiguous float32 (out channels × in channels per group × width)");
  TORCH_CHECK(groups >= 1 && x.size(2) == groups * weight.size(1) && weight.size(0) % groups == 0,
              "grouped_conv1d: channels do not match the groups");
  const int64_t ci = weight.size(1), co = weight.size(0) / groups, taps = weight.size(2), len = x.size(1);
  TORCH_CHECK(ci % kOut == 0 && co % kOut == 0 && taps >= 1 && taps <= kMaxTaps && stride >= 1 && pad >= 0 &&
                  len + 2 * pad >= taps,
              "grouped_conv1d: channels per group must be multiples of 16, the width at most 16");
  return {x.size(0), len, groups, ci, co, taps, stride, pad, (len + 2 * pad - taps) / stride + 1};
}

// y[b, o, g·co + c] = Σ_t Σ_j x[b, o·stride + t - pad, g·ci + j] · weight[g·co + c, j, t]. The examples split among
// the threads; within one, a tile of output rows at a time for every cell, so that the tile's input rows (all cells'
// channels) stay in L1.
torch::Tensor grouped_forward(const torch::Tensor& x, const torch::Tensor& weight, const Grouped& d) {
  const int64_t kci = d.groups * d.ci, kco = d.groups * d.co, blocks = d.co / kOut;
  // Per cell, block of 16 output channels and tap: ci × 16 weights, the 16 side by side.
  const auto packed = weight.view({d.groups, blocks, kOut, d.ci, d.taps}).permute({0, 1, 4, 3, 2}).contiguous();
  auto y = torch::empty({d.b, d.lo, kco}, x.options());
  const float* X = x.data_ptr<float>();
  const float* W = packed.data_ptr<float>();
  float* Y = y.data_ptr<float>();
  const std::vector<float> zero(kci, 0.f);  // the padding's row
  at::parallel_for(0, d.b, 1, [&](int64_t b0, int64_t b1) {
    const float* src[kMaxTaps * kTile];
    const float* w[kMaxTaps];
    float* dst[kTile];
    for (int64_t b = b0; b < b1; ++b) {
      tiles(d.lo, [&](int64_t o0, int n) {
        for (int r = 0; r < n; ++r) {
          for (int64_t t = 0; t < d.taps; ++t) {
            const int64_t row = (o0 + r) * d.stride + t - d.pad;
            src[t * kTile + r] = row >= 0 && row < d.len ? X + (b * d.len + row) * kci : zero.data();
          }
        }
        // The next tile's input rows (the next example's first ones after the last tile): cell g's line of each
        // while this tile works on cell g.
        const int64_t next = o0 + n < d.lo ? b * d.len + (o0 + n) * d.stride - d.pad : (b + 1) * d.len - d.pad;
        for (int64_t g = 0; g < d.groups; ++g) {
          prefetch_rows(X, next, next + n * d.stride + d.taps, d.b * d.len, kci, g * d.ci, d.ci);
          for (int64_t blk = 0; blk < blocks; ++blk) {
            for (int64_t t = 0; t < d.taps; ++t) w[t] = W + ((g * blocks + blk) * d.taps + t) * d.ci * kOut;
            for (int r = 0; r < n; ++r) dst[r] = Y + (b * d.lo + o0 + r) * kco + g * d.co + blk * kOut;
            conv_tile_n(n, static_cast<int>(d.taps), src, g * d.ci, w, d.ci, dst);
          }
        }
      });
    }
  });
  return y;
}

// dL/dx[b, i, g·ci + j] = Σ over taps t with (i + pad - t) divisible by the stride, o = (i + pad - t) / stride in
// range: Σ_c gy[b, o, g·co + c] · weight[g·co + c, j, t]. The input rows of one residue modulo the stride,
// i = ρ + m·stride, see the output gradient's rows o = (ρ + pad - t) / stride + m: the forward's kernel, with the roles
// of the channels swapped and the source rows one apart.
torch::Tensor grouped_backward_input(const torch::Tensor& grad_y, const torch::Tensor& weight, const Grouped& d) {
  const int64_t kci = d.groups * d.ci, kco = d.groups * d.co, blocks = d.ci / kOut;
  // Per cell, block of 16 input channels and tap: co × 16 weights.
  const auto packed = weight.view({d.groups, d.co, blocks, kOut, d.taps}).permute({0, 2, 4, 1, 3}).contiguous();
  auto grad_x = torch::empty({d.b, d.len, kci}, grad_y.options());
  const float* G = grad_y.data_ptr<float>();
  const float* W = packed.data_ptr<float>();
  float* GX = grad_x.data_ptr<float>();
  const std::vector<float> zero(kco, 0.f);
  at::parallel_for(0, d.b, 1, [&](int64_t b0, int64_t b1) {
    const float* src[kMaxTaps * kTile];
    const float* w[kMaxTaps];
    int64_t tap[kMaxTaps];
    float* dst[kTile];
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t rho = 0; rho < std::min(d.stride, d.len); ++rho) {
        int taps = 0;  // the taps that reach rows of this residue (none: their gradient is 0)
        for (int64_t t = 0; t < d.taps; ++t) {
          if ((rho + d.pad - t) % d.stride == 0) tap[taps++] = t;
        }
        const int64_t rows = (d.len - rho + d.stride - 1) / d.stride;
        tiles(rows, [&](int64_t m0, int n) {
          // While the first residue's tiles run, the next example's output-gradient rows, as many as they cover
          // (the last tile the rest), cell g's line of each while this tile works on cell g.
          const int64_t ahead = rho > 0 ? 0 : (m0 + n < rows ? n : d.lo - m0);
          for (int r = 0; r < n; ++r) {
            for (int q = 0; q < taps; ++q) {
              const int64_t o = (rho + d.pad - tap[q]) / d.stride + m0 + r;  // an exact division
              src[q * kTile + r] = o >= 0 && o < d.lo ? G + (b * d.lo + o) * kco : zero.data();
            }
          }
          for (int64_t g = 0; g < d.groups; ++g) {
            const int64_t next = (b + 1) * d.lo + m0;
            prefetch_rows(G, next, next + ahead, d.b * d.lo, kco, g * d.co, d.co);
            for (int64_t blk = 0; blk < blocks; ++blk) {
              for (int q = 0; q < taps; ++q) w[q] = W + ((g * blocks + blk) * d.taps + tap[q]) * d.co * kOut;
              for (int r = 0; r < n; ++r) {
                dst[r] = GX + (b * d.len + rho + d.stride * (m0 + r)) * kci + g * d.ci + blk * kOut;
              }
              conv_tile_n(n, taps, src, g * d.co, w, d.co, dst);
            }
          }
        });
      }
    }
  });
  return grad_x;
}

// dL/dweight[g·co + c, j, t] = Σ_b Σ_o gy[b, o, g·co + c] · x[b, o·stride + t - pad, g·ci + j]. The cells split
// among the threads (each cell's sums in one order whatever their number). The examples go by in chunks of kChunk: a
// chunk's rows are read in memory order (a thread's cells side by side: contiguous runs), each cell's slice copied
// zero-padded (no bounds in the loop) and contiguous, as are the output gradients; then per cell, a tile of
// (tap, input channel) pairs × 16 output channels stays in registers over the chunk's examples and positions.
torch::Tensor grouped_backward_weight(const torch::Tensor& grad_y, const torch::Tensor& x, const Grouped& d) {
  const int64_t kci = d.groups * d.ci, kco = d.groups * d.co, blocks = d.co / kOut, pairs = d.taps * d.ci;
  const int64_t padded = d.len + 2 * d.pad;  // rows of an example's zero-padded input
  auto grad_w = torch::empty({kco, d.ci, d.taps}, x.options());
  const float* X = x.data_ptr<float>();
  const float* G = grad_y.data_ptr<float>();
  float* GW = grad_w.data_ptr<float>();
  at::parallel_for(0, d.groups, 1, [&](int64_t g0, int64_t g1) {
    const int64_t cells = g1 - g0, xsize = kChunk * padded * d.ci, gsize = kChunk * d.lo * kOut;
    // acc: per cell and block, (tap, input channel) pairs × 16 output channels; xs: per cell, the chunk's padded
    // inputs; gs: per cell and block, the chunk's output gradients.
    // 64-byte aligned (torch's allocator), as are the rows: a vector a cache line, none across two (second layer:
    // 1.55 -> 1.45 ms or so, third 0.66 -> 0.62).
    auto acc_t = torch::zeros({cells * blocks * pairs * kOut}, x.options());
    auto xs_t = torch::zeros({cells * xsize}, x.options()), gs_t = torch::empty({cells * blocks * gsize}, x.options());
    float* acc_p = acc_t.data_ptr<float>();
    float* xs_p = xs_t.data_ptr<float>();
    float* gs_p = gs_t.data_ptr<float>();
    for (int64_t b0 = 0; b0 < d.b; b0 += kChunk) {
      const int64_t nb = std::min(kChunk, d.b - b0);
      for (int64_t b = 0; b < nb; ++b) {
        for (int64_t row = 0; row < d.len; ++row) {
          const float* from = X + ((b0 + b) * d.len + row) * kci + g0 * d.ci;
          for (int64_t c = 0; c < cells; ++c) {
            copy_floats(from + c * d.ci, d.ci, xs_p + c * xsize + (b * padded + d.pad + row) * d.ci);
          }
        }
        for (int64_t o = 0; o < d.lo; ++o) {
          const float* from = G + ((b0 + b) * d.lo + o) * kco + g0 * d.co;
          for (int64_t cb = 0; cb < cells * blocks; ++cb) {  // cell c, block blk: cb = c · blocks + blk
            copy_floats(from + cb * kOut, kOut, gs_p + cb * gsize + (b * d.lo + o) * kOut);
          }
        }
      }
      for (int64_t c = 0; c < cells; ++c) {
        for (int64_t blk = 0; blk < blocks; ++blk) {
          const float* gc = gs_p + (c * blocks + blk) * gsize;
          tiles(pairs, [&](int64_t p0, int n) {
            float* am = acc_p + ((c * blocks + blk) * pairs + p0) * kOut;
            // Pair (t, j) = t·ci + j is float t·ci + j of a window (its rows of ci channels one after the other):
            // a tile's pairs are consecutive floats.
            wgrad_tile_n(n, xs_p + c * xsize + p0, padded * d.ci, gc, nb, d.lo, d.stride * d.ci, am);
          });
        }
      }
    }
    for (int64_t c = 0; c < cells; ++c) {
      for (int64_t blk = 0; blk < blocks; ++blk) {
        for (int64_t q = 0; q < pairs; ++q) {
          const int64_t t = q / d.ci, j = q % d.ci;
          const float* a = acc_p + ((c * blocks + blk) * pairs + q) * kOut;
          for (int v = 0; v < kOut; ++v) GW[(((g0 + c) * d.co + blk * kOut + v) * d.ci + j) * d.taps + t] = a[v];
        }
      }
    }
  });
  return grad_w;
}

}  // namespace

// x: N × C rows. Returns (y: groups × N × C / groups, see Layout; mean, invstd); updates running_mean and
// running_var in place.
std::vector<torch::Tensor> forward(torch::Tensor x, torch::Tensor gamma, torch::Tensor beta, torch::Tensor running_mean,
                                   torch::Tensor running_var, double momentum, double eps, int64_t groups) {
  TORCH_CHECK(x.dim() == 2, "batch_norm_relu: x must be 2-D (rows × channels)");
  check(x, 2, {gamma, beta, running_mean, running_var}, x.size(1));
  return normalize(StoredRows{x.data_ptr<float>(), x.size(1)}, x.size(0), x.size(1), gamma, beta, running_mean,
                   running_var, momentum, eps, groups);
}

// Given dL/dy (laid out as y), returns (dL/dx: N × C, dL/dgamma, dL/dbeta).
std::vector<torch::Tensor> backward(torch::Tensor grad_y, torch::Tensor x, torch::Tensor gamma, torch::Tensor beta,
                                    torch::Tensor mean, torch::Tensor invstd, int64_t groups) {
  TORCH_CHECK(x.dim() == 2, "batch_norm_relu: x must be 2-D (rows × channels)");
  const int64_t n = x.size(0), c = x.size(1);
  check(x, 2, {gamma, beta, mean, invstd}, c);
  const auto gy = layout(n, c, groups);
  TORCH_CHECK(grad_y.dim() == 3 && grad_y.size(0) == groups && grad_y.size(1) == n && grad_y.size(2) == c / groups &&
                  grad_y.is_contiguous() && grad_y.scalar_type() == torch::kFloat,
              "batch_norm_relu: grad_y must be contiguous float32 of the output's shape");
  const StoredRows rows{x.data_ptr<float>(), c};
  const float* GY = grad_y.data_ptr<float>();
  const auto bw = backward_sums(rows, GY, gy, n, c, gamma, beta, mean, invstd);
  const float* M = mean.data_ptr<float>();
  const float* B = beta.data_ptr<float>();
  const float *A = bw.a.data(), *K1 = bw.k1.data(), *K2 = bw.k2.data(), *K3 = bw.k3.data();
  auto grad_x = torch::empty_like(x);
  float* GX = grad_x.data_ptr<float>();
  each_block(n, [&](int64_t i0, int64_t i1) {
    sweep<0>(rows, i0, i1, c, nullptr, [&]<class T>(T*, const auto& blk, int64_t i, int64_t j) {
      const T m = load<T>(M + j), xi = blk.template at<T>(i, j);
      const T gm = where_positive(pre(xi, m, load<T>(A + j), load<T>(B + j)), load<T>(GY + gy.at(i, j)));
      store(GX + i * c + j, load<T>(K1 + j) * (gm - load<T>(K2 + j) - (xi - m) * load<T>(K3 + j)));
    });
  });
  return {grad_x, bw.grad_gamma, bw.grad_beta};
}

// x: batch × len signals, weight: C × KW. Returns (y: (batch · lo) × C rows, mean, invstd) of
// relu(batch_norm(conv1d(x, weight))); updates running_mean and running_var in place.
std::vector<torch::Tensor> conv_forward(torch::Tensor x, torch::Tensor weight, int64_t stride, int64_t pad,
                                        torch::Tensor gamma, torch::Tensor beta, torch::Tensor running_mean,
                                        torch::Tensor running_var, double momentum, double eps) {
  check(x, 2, {}, 0);
  check(weight, 2, {gamma, beta, running_mean, running_var}, weight.size(0));
  switch (weight.size(1)) {
    case 3: return conv_forward_k<3>(x, weight, stride, pad, gamma, beta, running_mean, running_var, momentum, eps);
    case 5: return conv_forward_k<5>(x, weight, stride, pad, gamma, beta, running_mean, running_var, momentum, eps);
    case 7: return conv_forward_k<7>(x, weight, stride, pad, gamma, beta, running_mean, running_var, momentum, eps);
    default: TORCH_CHECK(false, "conv_batch_norm_relu: widths 3, 5 and 7 only, got ", weight.size(1));
  }
}

// Given dL/dy, returns (dL/dweight, dL/dgamma, dL/dbeta); x takes no gradient (it is the data).
std::vector<torch::Tensor> conv_backward(torch::Tensor grad_y, torch::Tensor x, torch::Tensor weight, int64_t stride,
                                         int64_t pad, torch::Tensor gamma, torch::Tensor beta, torch::Tensor mean,
                                         torch::Tensor invstd) {
  check(x, 2, {}, 0);
  check(weight, 2, {gamma, beta, mean, invstd}, weight.size(0));
  switch (weight.size(1)) {
    case 3: return conv_backward_k<3>(grad_y, x, weight, stride, pad, gamma, beta, mean, invstd);
    case 5: return conv_backward_k<5>(grad_y, x, weight, stride, pad, gamma, beta, mean, invstd);
    case 7: return conv_backward_k<7>(grad_y, x, weight, stride, pad, gamma, beta, mean, invstd);
    default: TORCH_CHECK(false, "conv_batch_norm_relu: widths 3, 5 and 7 only, got ", weight.size(1));
  }
}

// x: batch × positions × groups·ci rows, weight: groups·co × ci × width. Returns batch × out positions × groups·co.
torch::Tensor grouped_conv_forward(torch::Tensor x, torch::Tensor weight, int64_t groups, int64_t stride, int64_t pad) {
  return grouped_forward(x, weight, grouped(x, weight, groups, stride, pad));
}

// Given dL/dy, returns (dL/dx, dL/dweight), each an undefined tensor unless asked for.
std::vector<torch::Tensor> grouped_conv_backward(torch::Tensor grad_y, torch::Tensor x, torch::Tensor weight,
                                                 int64_t groups, int64_t stride, int64_t pad, bool input_grad,
                                                 bool weight_grad) {
  const auto d = grouped(x, weight, groups, stride, pad);
  TORCH_CHECK(grad_y.dim() == 3 && grad_y.size(0) == d.b && grad_y.size(1) == d.lo &&
                  grad_y.size(2) == d.groups * d.co && grad_y.is_contiguous() && grad_y.scalar_type() == torch::kFloat,
              "grouped_conv1d: grad_y must be contiguous float32 of the output's shape");
  return {input_grad ? grouped_backward_input(grad_y, weight, d) : torch::Tensor(),
          weight_grad ? grouped_backward_weight(grad_y, x, d) : torch::Tensor()};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "BatchNorm (training) + ReLU over N × C float32 rows");
  m.def("backward", &backward, "its backward: (grad_x, grad_gamma, grad_beta)");
  m.def("conv_forward", &conv_forward, "Conv1d of one shared input channel into C, then BatchNorm (training) + ReLU");
  m.def("conv_backward", &conv_backward, "its backward: (grad_weight, grad_gamma, grad_beta)");
  m.def("grouped_conv_forward", &grouped_conv_forward, "Grouped Conv1d of channels-last rows");
  m.def("grouped_conv_backward", &grouped_conv_backward, "its backward: (grad_x, grad_weight), each if asked for");
}
