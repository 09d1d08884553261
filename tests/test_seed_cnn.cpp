// The seed CNN end to end on the CPU: it memorises one fixed batch, and trains the same way for the
// same seed (dropout masks and initialisation come from Philox streams).
#include <doctest/doctest.h>

#include <cmath>

#include "engine/ops.h"
#include "engine/random.h"
#include "layers/models/seed_cnn.h"
#include "layers/optim/optimizer.h"
#include "tests/test_util.h"

using namespace volt;

TEST_CASE("seed CNN overfits one fixed batch of 32 random images") {
  manual_seed(0);
  SeedCNNOptions opts;
  opts.dropout = 0.0;  // memorisation is judged on the training loss itself
  SeedCNN model(opts);
  Adam opt(model.parameters(), AdamOptions{});
  const Tensor x = test::rand_tensor({32, 3, 32, 32}, 5);
  std::vector<int64_t> labels;
  Generator g(9);
  for (int i = 0; i < 32; ++i) labels.push_back(int64_t(g.next_below(10)));
  const Tensor y = Tensor::from_labels(labels);
  float loss = 0, first = 0;
  int steps = 0;
  for (; steps < 300; ++steps) {
    opt.zero_grad();
    Tensor l = cross_entropy(model(x), y);
    loss = l.item();
    if (steps == 0) first = loss;
    if (loss < 0.05f) break;
    l.backward();
    opt.step();
  }
  MESSAGE("loss " << first << " -> " << loss << " after " << steps << " Adam steps");
  CHECK(first > 1.5f);
  CHECK(loss < 0.05f);
}

TEST_CASE("seed CNN training is reproducible for a seed, with dropout on") {
  auto run = [](uint64_t seed) {
    manual_seed(seed);
    SeedCNN model;  // dropout 0.2
    SGD opt(model.parameters(), SGDOptions{0.05, 0.9});
    const Tensor x = test::rand_tensor({8, 3, 32, 32}, 3);
    const Tensor y = Tensor::from_labels({0, 1, 2, 3, 4, 5, 6, 7});
    for (int s = 0; s < 3; ++s) {
      opt.zero_grad();
      Tensor l = cross_entropy(model(x), y);
      l.backward();
      opt.step();
    }
    return model.fc_layers->children()[0].second->named_parameters()[0].second.to_vector();
  };
  const auto a = run(11), b = run(11), c = run(12);
  CHECK(a == b);
  CHECK(a != c);
}

TEST_CASE("seed CNN for MNIST-shaped input (1x28x28) trains a step") {
  manual_seed(1);
  SeedCNNOptions opts;
  opts.in_channels = 1;
  opts.height = opts.width = 28;
  SeedCNN model(opts);
  CHECK(model.flat_features() == 32 * 4 * 4);
  Adam opt(model.parameters(), AdamOptions{});
  const Tensor x = test::rand_tensor({3, 1, 28, 28}, 2);
  Tensor l = cross_entropy(model(x), Tensor::from_labels({1, 2, 3}));
  l.backward();
  opt.step();
  CHECK(std::isfinite(l.item()));
}
