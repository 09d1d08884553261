// The emulated CUDA SDK's <cuda_runtime.h>: the runtime API (cuda_runtime_api.h) and the device-side
// language (the fiber emulator, kernels/cuda/emu/cuda_emu.h).
#pragma once
#include "cuda_runtime_api.h"
#include "kernels/cuda/emu/cuda_emu.h"

namespace volt_emu {
// kernel<<<grid, block, smem_bytes, stream>>>(args...): the configuration is checked now (as the
// launch's error would be), the kernel runs when the stream's work does.
template <class... P>
void launch_on(cudaStream_t stream, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem_bytes, P... args) {
  check_launch_config(grid, block, smem_bytes);
  submit(stream, [=] { launch(kernel, grid, block, smem_bytes, args...); });
}
}  // namespace volt_emu
