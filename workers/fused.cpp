// BatchNorm (training mode) followed by ReLU, forward and backward, each in two passes over the activations.
//
// The batched models' activations on a CPU are channels-last: N rows (batch × positions) of C channels (the K cells'
// channels side by side), one row contiguous. ATen runs BatchNorm and ReLU as separate operators, forward and
// backward, each with its own passes over memory and its own output; here the statistics take one pass, the
// normalization and the ReLU one more, and the backward recomputes the ReLU's mask from the input instead of
// reading the output. The inner loops run over a row's channels, which the compiler vectorizes.
//
// Both passes split the rows among torch's intra-op threads (at::parallel_for), in contiguous ranges as oneDNN's
// convolutions on either side split their batch, so that each core finds the rows it works on in its own cache
// (splitting the channels instead was slower on two threads than PyTorch's operators). The per-channel sums come
// from float partial sums over fixed blocks of rows, added in double in block order: the same numbers whatever the
// number of threads.
//
// Built on first use by workers/fused.py (torch.utils.cpp_extension, with OpenMP: torch's own runtime); float32 only.

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

void check(const torch::Tensor& x, const std::vector<torch::Tensor>& per_channel) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.scalar_type() == torch::kFloat && x.device().is_cpu(),
              "batch_norm_relu: x must be a contiguous 2-D float32 CPU tensor (rows × channels)");
  TORCH_CHECK(x.size(0) > 1, "batch_norm_relu: expected more than 1 value per channel when training");
  for (const auto& t : per_channel) {
    TORCH_CHECK(t.dim() == 1 && t.is_contiguous() && t.scalar_type() == torch::kFloat && t.size(0) == x.size(1),
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

// Per-channel sums in double of two float partial sums kept per block of rows: parts holds, for block b, the first
// sum's C values at [2·b·C, 2·b·C + C) and the second's after them.
void add_blocks(const std::vector<float>& parts, int64_t blocks, int64_t c, std::vector<double>& s1,
                std::vector<double>& s2) {
  for (int64_t b = 0; b < blocks; ++b) {
    const float* p = parts.data() + 2 * b * c;
    for (int64_t j = 0; j < c; ++j) {
      s1[j] += p[j];
      s2[j] += p[c + j];
    }
  }
}

}  // namespace

// x: N × C. Returns (y, mean, invstd); updates running_mean and running_var in place (unbiased variance), as
// torch.nn.functional.batch_norm does in training mode.
std::vector<torch::Tensor> forward(torch::Tensor x, torch::Tensor gamma, torch::Tensor beta, torch::Tensor running_mean,
                                   torch::Tensor running_var, double momentum, double eps) {
  check(x, {gamma, beta, running_mean, running_var});
  const int64_t n = x.size(0), c = x.size(1);
  const float* X = x.data_ptr<float>();
  auto mean = torch::empty({c}, x.options()), invstd = torch::empty({c}, x.options());
  auto y = torch::empty_like(x);
  float* M = mean.data_ptr<float>();
  float* I = invstd.data_ptr<float>();
  float* Y = y.data_ptr<float>();
  const float* G = gamma.data_ptr<float>();
  const float* B = beta.data_ptr<float>();
  float* RM = running_mean.data_ptr<float>();
  float* RV = running_var.data_ptr<float>();
  // Sums of (x - shift) and its square, shifted by the first row: no cancellation when the mean dwarfs the spread.
  const float* shift = X;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<float> parts(2 * blocks * c, 0.f);
  at::parallel_for(0, blocks, kRows / kBlock, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      float* ps = parts.data() + 2 * b * c;
      float* pss = ps + c;
      for (int64_t i = b * kBlock; i < std::min(n, (b + 1) * kBlock); ++i) {
        const float* row = X + i * c;
#pragma omp simd
        for (int64_t j = 0; j < c; ++j) {
          const float d = row[j] - shift[j];
          ps[j] += d;
          pss[j] += d * d;
        }
      }
    }
  });
  std::vector<double> s(c, 0.0), ss(c, 0.0);
  add_blocks(parts, blocks, c, s, ss);
  std::vector<float> a(c);
  for (int64_t j = 0; j < c; ++j) {
    const double m = s[j] / n;
    const double var = std::max(0.0, ss[j] / n - m * m);
    M[j] = static_cast<float>(shift[j] + m);
    I[j] = static_cast<float>(1.0 / std::sqrt(var + eps));
    RM[j] = static_cast<float>((1 - momentum) * RM[j] + momentum * M[j]);
    RV[j] = static_cast<float>((1 - momentum) * RV[j] + momentum * var * n / (n - 1));
    a[j] = I[j] * G[j];
  }
  at::parallel_for(0, n, kRows, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float* row = X + i * c;
      float* out = Y + i * c;
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) {
        const float v = pre(row[j], M[j], a[j], B[j]);
        out[j] = v > 0.f ? v : 0.f;
      }
    }
  });
  return {y, mean, invstd};
}

// Given dL/dy, returns (dL/dx, dL/dgamma, dL/dbeta).
std::vector<torch::Tensor> backward(torch::Tensor grad_y, torch::Tensor x, torch::Tensor gamma, torch::Tensor beta,
                                    torch::Tensor mean, torch::Tensor invstd) {
  check(x, {gamma, beta, mean, invstd});
  TORCH_CHECK(grad_y.sizes() == x.sizes() && grad_y.is_contiguous() && grad_y.scalar_type() == torch::kFloat,
              "batch_norm_relu: grad_y must be contiguous float32 of x's shape");
  const int64_t n = x.size(0), c = x.size(1);
  const float* GY = grad_y.data_ptr<float>();
  const float* X = x.data_ptr<float>();
  const float* G = gamma.data_ptr<float>();
  const float* B = beta.data_ptr<float>();
  const float* M = mean.data_ptr<float>();
  const float* I = invstd.data_ptr<float>();
  auto grad_gamma = torch::empty({c}, x.options()), grad_beta = torch::empty({c}, x.options());
  auto grad_x = torch::empty_like(x);
  float* GG = grad_gamma.data_ptr<float>();
  float* GB = grad_beta.data_ptr<float>();
  float* GX = grad_x.data_ptr<float>();
  std::vector<float> a(c);
  for (int64_t j = 0; j < c; ++j) a[j] = I[j] * G[j];
  // The sums of the gradient under the ReLU's mask, and of it times (x - mean).
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<float> parts(2 * blocks * c, 0.f);
  at::parallel_for(0, blocks, kRows / kBlock, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      float* pg = parts.data() + 2 * b * c;
      float* pgx = pg + c;
      for (int64_t i = b * kBlock; i < std::min(n, (b + 1) * kBlock); ++i) {
        const float* g = GY + i * c;
        const float* row = X + i * c;
#pragma omp simd
        for (int64_t j = 0; j < c; ++j) {
          const float gj = g[j];  // loaded unconditionally: a load under the condition would not vectorize
          const float gm = pre(row[j], M[j], a[j], B[j]) > 0.f ? gj : 0.f;
          pg[j] += gm;
          pgx[j] += gm * (row[j] - M[j]);
        }
      }
    }
  });
  std::vector<double> sum_g(c, 0.0), sum_gx(c, 0.0);
  add_blocks(parts, blocks, c, sum_g, sum_gx);
  std::vector<float> k1(c), k2(c), k3(c);
  for (int64_t j = 0; j < c; ++j) {
    GG[j] = static_cast<float>(sum_gx[j] * I[j]);
    GB[j] = static_cast<float>(sum_g[j]);
    k1[j] = G[j] * I[j];
    k2[j] = static_cast<float>(sum_g[j] / n);
    k3[j] = static_cast<float>(static_cast<double>(I[j]) * I[j] * sum_gx[j] / n);
  }
  at::parallel_for(0, n, kRows, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float* g = GY + i * c;
      const float* row = X + i * c;
      float* out = GX + i * c;
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) {
        const float gj = g[j];  // loaded unconditionally: a load under the condition would not vectorize
        const float gm = pre(row[j], M[j], a[j], B[j]) > 0.f ? gj : 0.f;
        out[j] = k1[j] * (gm - k2[j] - (row[j] - M[j]) * k3[j]);
      }
    }
  });
  return {grad_x, grad_gamma, grad_beta};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "BatchNorm (training) + ReLU over N × C float32 rows");
  m.def("backward", &backward, "its backward: (grad_x, grad_gamma, grad_beta)");
}
