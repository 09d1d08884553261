// How many CUDA devices the runtime sees (0 without a driver or GPU). Built only with the CUDA backend.
#pragma once

namespace volt::cuda {
int device_count();
}
