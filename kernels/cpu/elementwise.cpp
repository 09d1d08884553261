// CPU elementwise kernels (see elementwise.h).
#include "kernels/elementwise.h"

#include "kernels/philox.h"

namespace volt::cpu {

namespace {
template <class F>
void apply_same(int64_t n, const float* a, const float* b, float* out, F f) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) out[i] = f(a[i], b[i]);
}

template <class F>
void apply_broadcast(int64_t ndim, const int64_t* shape, const float* a, const int64_t* as, const float* b,
                     const int64_t* bs, float* out, F f) {
  int64_t total = 1;
  for (int64_t d = 0; d < ndim; ++d) total *= shape[d];
  if (total == 0) return;
  const int64_t inner = ndim ? shape[ndim - 1] : 1;
  const int64_t ai = ndim ? as[ndim - 1] : 0, bi = ndim ? bs[ndim - 1] : 0;
  const int64_t rows = total / inner;
#pragma omp parallel for schedule(static) if (total > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    // Decompose the row index into the leading dims.
    int64_t rem = r, ao = 0, bo = 0;
    for (int64_t d = ndim - 2; d >= 0; --d) {
      const int64_t idx = rem % shape[d];
      rem /= shape[d];
      ao += idx * as[d];
      bo += idx * bs[d];
    }
    float* o = out + r * inner;
    for (int64_t i = 0; i < inner; ++i) o[i] = f(a[ao + i * ai], b[bo + i * bi]);
  }
}

template <class F>
void dispatch(BinaryOp op, F&& run) {
  switch (op) {
    case BinaryOp::Add: run([](float x, float y) { return x + y; }); break;
    case BinaryOp::Sub: run([](float x, float y) { return x - y; }); break;
    case BinaryOp::Mul: run([](float x, float y) { return x * y; }); break;
  }
}
}  // namespace

void binary_broadcast(BinaryOp op, int64_t ndim, const int64_t* shape, const float* a, const int64_t* as,
                      const float* b, const int64_t* bs, float* out) {
  dispatch(op, [&](auto f) { apply_broadcast(ndim, shape, a, as, b, bs, out, f); });
}

void binary_same(BinaryOp op, int64_t n, const float* a, const float* b, float* out) {
  dispatch(op, [&](auto f) { apply_same(n, a, b, out, f); });
}

void scale(int64_t n, const float* x, float alpha, float beta, float* out) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) out[i] = alpha * x[i] + beta;
}

void axpy(int64_t n, float alpha, const float* x, float* y) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

void relu_forward(int64_t n, const float* x, float* y) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] > 0.f ? x[i] : (x[i] != x[i] ? x[i] : 0.f);  // NaN propagates
}

void relu_backward(int64_t n, const float* dy, const float* x, float* dx) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const float d = dy[i];  // loaded unconditionally so the select vectorises (no branch per element)
    dx[i] = x[i] > 0.f ? d : 0.f;
  }
}

void dropout_forward(int64_t n, const float* x, float p, uint64_t seed, uint64_t stream, uint64_t offset,
                     uint8_t* keep, float* y, bool relu) {
  const float s = p < 1.f ? 1.f / (1.f - p) : 0.f;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const bool k = philox_uniform(philox_u32(seed, stream, offset, uint64_t(i))) >= p;
    const float v = relu ? (x[i] > 0.f ? x[i] : (x[i] != x[i] ? x[i] : 0.f)) : x[i];  // relu_forward's rule
    keep[i] = k && (!relu || x[i] > 0.f);
    y[i] = k ? v * s : 0.f;
  }
}

void dropout_backward(int64_t n, const float* dy, const uint8_t* keep, float p, float* dx) {
  const float s = p < 1.f ? 1.f / (1.f - p) : 0.f;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const float d = dy[i] * s;
    dx[i] = keep[i] ? d : 0.f;
  }
}

}  // namespace volt::cpu
