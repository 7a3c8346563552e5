// BatchNorm (training mode) followed by ReLU, forward and backward, each in two passes over the activations; and the
// same after a convolution of one input channel shared by every output channel, recomputed instead of stored.
//
// The batched models' activations on a CPU are channels-last: N rows (batch × positions) of C channels (the K cells'
// channels side by side), one row contiguous. ATen runs BatchNorm and ReLU as separate operators, forward and
// backward, each with its own passes over memory and its own output; here the statistics take one pass, the
// normalization and the ReLU one more, and the backward recomputes the ReLU's mask from the input instead of
// reading the output. The inner loops run over a row's channels, which the compiler vectorizes.
//
// cnn1d's first layer convolves one input channel, the same batch for every cell, into K·C channels: its output is
// 5 MiB for 16 cells where its input is 20 KiB. The second pair of operators never stores that output: each pass
// recomputes a row of it from the input (KW multiply-adds per value, cheaper than reading it back from memory), and
// the backward folds the convolution's weight gradient into its last pass, so the gradient of the convolution's
// output is not stored either. Reading and writing memory is what these operators' time goes to.
//
// Both passes split the rows among torch's intra-op threads (at::parallel_for), in contiguous ranges as oneDNN's
// convolutions on either side split their batch, so that each core finds the rows it works on in its own cache
// (splitting the channels instead was slower on two threads than PyTorch's operators). Sums over rows come from float
// partial sums over fixed blocks of rows, added in double in block order: the same numbers whatever the number of
// threads.
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

// The pre-activation (x - mean)·a + beta with a = invstd·gamma: centred first, as PyTorch does, so that a mean far
// from zero costs no precision; the same rounding (one fused multiply-add) in the forward and the backward, so that
// the backward's recomputed ReLU mask is exactly the forward's.
inline float pre(float x, float mean, float a, float beta) { return std::fma(x - mean, a, beta); }

constexpr int64_t kBlock = 64;  // rows per float partial sum: a float sum over thousands of rows would lose more than
                                // the kernels' other roundings; accumulating in double in the loop runs at half width
constexpr int64_t kRows = 256;  // rows per thread at least (256 rows of 256 channels: 256 KiB)

// The rows BatchNorm normalizes, stored: row(i, scratch) points at row i of an N × C tensor.
struct StoredRows {
  const float* x;
  int64_t c;
  const float* row(int64_t i, float* /*scratch*/) const { return x + i * c; }
};

// ... or computed: a convolution (width KW, no bias) of a batch of 1-D signals x (batch × len) into C channels, each
// with its own weights (wt: KW × C, tap-major), row i being example i / lo at output position i % lo. row(i, z)
// writes row i into z (C floats) and points at it; window(i, v) gives the KW inputs that row sees (0 in the padding).
template <int KW>
struct ConvolvedRows {
  const float* x;
  const float* wt;
  int64_t len, lo, stride, pad, c;

  void window(int64_t i, float* v) const {
    const float* signal = x + (i / lo) * len;
    const int64_t start = (i % lo) * stride - pad;
    for (int t = 0; t < KW; ++t) {
      const int64_t p = start + t;
      v[t] = p >= 0 && p < len ? signal[p] : 0.f;
    }
  }
  const float* row(int64_t i, float* z) const {
    float v[KW];
    window(i, v);
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) {
      float acc = 0.f;
      for (int t = 0; t < KW; ++t) acc = std::fma(wt[t * c + j], v[t], acc);
      z[j] = acc;
    }
    return z;
  }
};

// Per-channel sums over all n rows: add(i, sums, scratch) adds row i's terms into a block's float partial sums
// (width floats; scratch: C floats of the thread's own); returns the width sums in double.
template <class Add>
std::vector<double> block_sums(int64_t n, int64_t c, int64_t width, const Add& add) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<float> parts(blocks * width, 0.f);
  at::parallel_for(0, blocks, kRows / kBlock, [&](int64_t b0, int64_t b1) {
    std::vector<float> scratch(c);
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t i = b * kBlock; i < std::min(n, (b + 1) * kBlock); ++i) add(i, parts.data() + b * width, scratch.data());
    }
  });
  std::vector<double> sums(width, 0.0);
  for (int64_t b = 0; b < blocks; ++b) {
    const float* p = parts.data() + b * width;
    for (int64_t q = 0; q < width; ++q) sums[q] += p[q];
  }
  return sums;
}

// f(i, scratch) for every row, the rows split among the threads.
template <class F>
void each_row(int64_t n, int64_t c, const F& f) {
  at::parallel_for(0, n, kRows, [&](int64_t i0, int64_t i1) {
    std::vector<float> scratch(c);
    for (int64_t i = i0; i < i1; ++i) f(i, scratch.data());
  });
}

// The forward over n rows: returns (y: n × C, mean, invstd); updates running_mean and running_var in place
// (unbiased variance), as torch.nn.functional.batch_norm does in training mode.
template <class Rows>
std::vector<torch::Tensor> normalize(const Rows& rows, int64_t n, int64_t c, const torch::Tensor& gamma,
                                     const torch::Tensor& beta, torch::Tensor& running_mean,
                                     torch::Tensor& running_var, double momentum, double eps) {
  TORCH_CHECK(n > 1, "batch_norm_relu: expected more than 1 value per channel when training");
  const auto options = gamma.options();
  // Sums of (x - shift) and its square, shifted by the first row: no cancellation when the mean dwarfs the spread.
  std::vector<float> shift(c);
  std::copy_n(rows.row(0, shift.data()), c, shift.begin());
  const auto sums = block_sums(n, c, 2 * c, [&](int64_t i, float* p, float* scratch) {
    const float* x = rows.row(i, scratch);
    float* ps = p;
    float* pss = p + c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) {
      const float d = x[j] - shift[j];
      ps[j] += d;
      pss[j] += d * d;
    }
  });
  auto mean = torch::empty({c}, options), invstd = torch::empty({c}, options);
  float* M = mean.data_ptr<float>();
  float* I = invstd.data_ptr<float>();
  const float* G = gamma.data_ptr<float>();
  const float* B = beta.data_ptr<float>();
  float* RM = running_mean.data_ptr<float>();
  float* RV = running_var.data_ptr<float>();
  std::vector<float> a(c);
  for (int64_t j = 0; j < c; ++j) {
    const double m = sums[j] / n;
    const double var = std::max(0.0, sums[c + j] / n - m * m);
    M[j] = static_cast<float>(shift[j] + m);
    I[j] = static_cast<float>(1.0 / std::sqrt(var + eps));
    RM[j] = static_cast<float>((1 - momentum) * RM[j] + momentum * M[j]);
    RV[j] = static_cast<float>((1 - momentum) * RV[j] + momentum * var * n / (n - 1));
    a[j] = I[j] * G[j];
  }
  auto y = torch::empty({n, c}, options);
  float* Y = y.data_ptr<float>();
  each_row(n, c, [&](int64_t i, float* scratch) {
    const float* x = rows.row(i, scratch);
    float* out = Y + i * c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) {
      const float v = pre(x[j], M[j], a[j], B[j]);
      out[j] = v > 0.f ? v : 0.f;
    }
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
Backward backward_sums(const Rows& rows, const float* GY, int64_t n, int64_t c, const torch::Tensor& gamma,
                       const torch::Tensor& beta, const torch::Tensor& mean, const torch::Tensor& invstd) {
  const float* G = gamma.data_ptr<float>();
  const float* B = beta.data_ptr<float>();
  const float* M = mean.data_ptr<float>();
  const float* I = invstd.data_ptr<float>();
  Backward out{torch::empty({c}, gamma.options()), torch::empty({c}, gamma.options()),
               std::vector<float>(c), std::vector<float>(c), std::vector<float>(c), std::vector<float>(c)};
  for (int64_t j = 0; j < c; ++j) out.a[j] = I[j] * G[j];
  const float* a = out.a.data();
  // The sums of the gradient under the ReLU's mask, and of it times (x - mean).
  const auto sums = block_sums(n, c, 2 * c, [&](int64_t i, float* p, float* scratch) {
    const float* x = rows.row(i, scratch);
    const float* g = GY + i * c;
    float* pg = p;
    float* pgx = p + c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) {
      const float gj = g[j];  // loaded unconditionally: a load under the condition would not vectorize
      const float gm = pre(x[j], M[j], a[j], B[j]) > 0.f ? gj : 0.f;
      pg[j] += gm;
      pgx[j] += gm * (x[j] - M[j]);
    }
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

// dL/dx for row i's C channels into dx, from the row x and its gradient g.
inline void grad_row(const float* x, const float* g, const Backward& bw, const float* M, const float* B, int64_t c,
                     float* dx) {
  const float *a = bw.a.data(), *k1 = bw.k1.data(), *k2 = bw.k2.data(), *k3 = bw.k3.data();
#pragma omp simd
  for (int64_t j = 0; j < c; ++j) {
    const float gj = g[j];  // loaded unconditionally: a load under the condition would not vectorize
    const float gm = pre(x[j], M[j], a[j], B[j]) > 0.f ? gj : 0.f;
    dx[j] = k1[j] * (gm - k2[j] - (x[j] - M[j]) * k3[j]);
  }
}

template <int KW>
ConvolvedRows<KW> convolved(const torch::Tensor& x, const torch::Tensor& wt, int64_t stride, int64_t pad) {
  const int64_t len = x.size(1);
  TORCH_CHECK(stride >= 1 && pad >= 0 && len + 2 * pad >= KW, "conv_batch_norm_relu: bad stride or padding");
  return {x.data_ptr<float>(), wt.data_ptr<float>(), len, (len + 2 * pad - KW) / stride + 1, stride, pad, wt.size(1)};
}

template <int KW>
std::vector<torch::Tensor> conv_forward_k(const torch::Tensor& x, const torch::Tensor& weight, int64_t stride,
                                          int64_t pad, const torch::Tensor& gamma, const torch::Tensor& beta,
                                          torch::Tensor& running_mean, torch::Tensor& running_var, double momentum,
                                          double eps) {
  const auto wt = weight.t().contiguous();  // KW × C: a tap's weights for all channels side by side
  const auto rows = convolved<KW>(x, wt, stride, pad);
  return normalize(rows, x.size(0) * rows.lo, rows.c, gamma, beta, running_mean, running_var, momentum, eps);
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
  const auto bw = backward_sums(rows, GY, n, c, gamma, beta, mean, invstd);
  const float* M = mean.data_ptr<float>();
  const float* B = beta.data_ptr<float>();
  // dL/dw[j, t] = Σ_rows dL/dz[row, j] · window[row, t]: dL/dz row by row, never stored.
  const auto sums = block_sums(n, c, KW * c, [&](int64_t i, float* p, float* scratch) {
    grad_row(rows.row(i, scratch), GY + i * c, bw, M, B, c, scratch);  // dL/dz over the row, in place
    float v[KW];
    rows.window(i, v);
    for (int t = 0; t < KW; ++t) {
      float* pw = p + t * c;
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) pw[j] = std::fma(scratch[j], v[t], pw[j]);
    }
  });
  auto grad_w = torch::empty({c, KW}, gamma.options());
  float* GW = grad_w.data_ptr<float>();
  for (int64_t j = 0; j < c; ++j) {
    for (int t = 0; t < KW; ++t) GW[j * KW + t] = static_cast<float>(sums[t * c + j]);
  }
  return {grad_w, bw.grad_gamma, bw.grad_beta};
}

}  // namespace

// x: N × C rows. Returns (y, mean, invstd); updates running_mean and running_var in place.
std::vector<torch::Tensor> forward(torch::Tensor x, torch::Tensor gamma, torch::Tensor beta, torch::Tensor running_mean,
                                   torch::Tensor running_var, double momentum, double eps) {
  TORCH_CHECK(x.dim() == 2, "batch_norm_relu: x must be 2-D (rows × channels)");
  check(x, 2, {gamma, beta, running_mean, running_var}, x.size(1));
  return normalize(StoredRows{x.data_ptr<float>(), x.size(1)}, x.size(0), x.size(1), gamma, beta, running_mean,
                   running_var, momentum, eps);
}

// Given dL/dy, returns (dL/dx, dL/dgamma, dL/dbeta).
std::vector<torch::Tensor> backward(torch::Tensor grad_y, torch::Tensor x, torch::Tensor gamma, torch::Tensor beta,
                                    torch::Tensor mean, torch::Tensor invstd) {
  TORCH_CHECK(x.dim() == 2, "batch_norm_relu: x must be 2-D (rows × channels)");
  const int64_t n = x.size(0), c = x.size(1);
  check(x, 2, {gamma, beta, mean, invstd}, c);
  TORCH_CHECK(grad_y.sizes() == x.sizes() && grad_y.is_contiguous() && grad_y.scalar_type() == torch::kFloat,
              "batch_norm_relu: grad_y must be contiguous float32 of x's shape");
  const StoredRows rows{x.data_ptr<float>(), c};
  const float* GY = grad_y.data_ptr<float>();
  const auto bw = backward_sums(rows, GY, n, c, gamma, beta, mean, invstd);
  const float* M = mean.data_ptr<float>();
  const float* B = beta.data_ptr<float>();
  auto grad_x = torch::empty_like(x);
  float* GX = grad_x.data_ptr<float>();
  each_row(n, c, [&](int64_t i, float*) { grad_row(rows.row(i, nullptr), GY + i * c, bw, M, B, c, GX + i * c); });
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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "BatchNorm (training) + ReLU over N × C float32 rows");
  m.def("backward", &backward, "its backward: (grad_x, grad_gamma, grad_beta)");
  m.def("conv_forward", &conv_forward, "Conv1d of one shared input channel into C, then BatchNorm (training) + ReLU");
  m.def("conv_backward", &conv_backward, "its backward: (grad_weight, grad_gamma, grad_beta)");
}
