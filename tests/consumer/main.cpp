// Builds the seed CNN through the installed Volt package and runs one training step.
#include <volt/volt.h>

#include <cmath>
#include <iostream>

int main() {
  volt::manual_seed(0);
  volt::SeedCNN model;
  volt::Adam opt(model.parameters(), volt::AdamOptions{});
  volt::Tensor x = volt::Tensor::full({4, 3, 32, 32}, 0.5f);
  volt::Tensor y = volt::Tensor::from_labels({0, 1, 2, 3});
  volt::Tensor loss = volt::cross_entropy(model(x), y);
  opt.zero_grad();
  loss.backward();
  opt.step();
  std::cout << "consumer: one step, loss " << loss.item() << "\n";
  return std::isfinite(loss.item()) ? 0 : 1;
}
