// How many CUDA devices the runtime sees (0 without a driver or GPU), and why there are none when the
// runtime reported an error. Built only with the CUDA backend.
#pragma once
#include <string>

namespace volt::cuda {
int device_count();
// "" when cudaGetDeviceCount succeeded (possibly with 0 devices), else its error name and text.
std::string device_count_error();
// Device `index`'s name and theoretical memory bandwidth in bytes/s (2 transfers per memory clock
// times the bus width, from the device's attributes), for benchmarks' fractions of peak.
std::string device_name(int index);
double peak_memory_bandwidth(int index);
// Device `index`'s streaming multiprocessors (asked once per device, then remembered): for kernels
// that size their grid to fill the GPU once.
int multiprocessor_count(int index);
}
