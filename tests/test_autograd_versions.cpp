// Autograd's version counters: a tensor an op saved for its backward and changed in place before it
// runs (through itself or a view, by each in-place op, by an optimizer step) is an error there; the
// in-place changes to gradients (clipping, unscaling) count too.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/tensor.h"
#include "layers/optim/grad_clip.h"
#include "layers/optim/grad_scaler.h"
#include "layers/optim/optimizer.h"
#include "tests/test_util.h"

using namespace volt;

TEST_CASE("a tensor saved for backward and changed in place before it runs is an error there, as in PyTorch") {
  Tensor x = Tensor::from_vector({4}, {-1.f, 2.f, -3.f, 4.f});
  x.requires_grad_();
  // relu saves its input: a change to it, or to a view of the same memory, is caught.
  for (int how = 0; how < 5; ++how) {
    CAPTURE(how);
    Tensor h = x * 2.f;
    Tensor r = relu(h);
    const uint64_t v = h.version();
    Tensor view = h.reshape({2, 2});
    if (how == 0) h.fill_(1.f);
    if (how == 1) view.zero_();
    if (how == 2) h.copy_(Tensor::ones({4}));
    if (how == 3) add_(view, Tensor::ones({2, 2}));
    if (how == 4) h.detach().set({0}, 5.f);
    CHECK(h.version() == v + 1);
    const std::string what = test::error_of([&] { sum(r).backward(); });
    CHECK(test::contains(what, "backward through 'relu': a tensor it saved (1 of 1, in a buffer of 16 bytes) "
                               "was changed in place after the op used it (version 0, now 1)"));
  }
  // What an op does not save may change: add reads neither operand in backward.
  {
    Tensor a = x * 1.f, b = Tensor::ones({4});
    Tensor y = add(a, b);
    a.fill_(7.f);
    b.fill_(7.f);
    sum(y).backward();
  }
  // An optimizer step between forward and backward changes the weights linear saved, where the
  // input's gradient needs them; a first layer (an input without a gradient) reads only the input,
  // so its weights may change, as in PyTorch.
  for (bool input_grad : {true, false}) {
    CAPTURE(input_grad);
    Tensor w = Tensor::full({1, 4}, 0.5f);
    w.requires_grad_();
    w.set_grad(Tensor::ones({1, 4}));
    SGDOptions so;
    so.lr = 0.1;
    SGD opt({w}, so);
    Tensor in = Tensor::ones({3, 4});
    if (input_grad) in.requires_grad_();
    Tensor out = linear(in, w, Tensor());
    opt.step();
    w.set_grad(Tensor());
    if (input_grad) {
      CHECK(test::contains(test::error_of([&] { sum(out).backward(); }), "backward through 'linear'"));
    } else {
      CHECK_NOTHROW(sum(out).backward());
      CHECK(w.grad().to_vector() == std::vector<float>{3.f, 3.f, 3.f, 3.f});
    }
  }
  // Changes after the backward are the normal case.
  Tensor h = x * 2.f;
  Tensor r = relu(h);
  sum(r).backward();
  CHECK_NOTHROW(h.fill_(0.f));
}

TEST_CASE("clipping and unscaling change gradients in place and count it") {
  Tensor p = Tensor::full({3}, 1.f);
  p.requires_grad_();
  p.set_grad(Tensor::from_vector({3}, {3.f, -4.f, 12.f}));
  const Tensor g = p.grad();
  uint64_t v = g.version();
  clip_grad_norm_({p}, 1.0);
  CHECK(g.version() == v + 1);
  v = g.version();
  clip_grad_value_({p}, 0.1);
  CHECK(g.version() == v + 1);
  v = g.version();
  SGD opt({p}, SGDOptions{});
  GradScaler scaler;
  scaler.unscale_(opt);
  CHECK(g.version() == v + 1);
}
