// The Add kernels on a CUDA device (adder_cuda.cpp): launches of adder_tiled.h's kernels.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>

#include "adder_tiled.h"

namespace sa_cuda {

// Whether the kernels can run on `t`'s device for its dtype (float32 or float64). The first call
// per device loads NVRTC and the driver and compiles the kernels; a failure is said once on stderr.
bool available(const at::Tensor& t);

// y [N, O, Ho, Wo] (allocated, contiguous) = the Add forward of contiguous x and f.
void forward(const at::Tensor& x, const at::Tensor& f, at::Tensor& y, const sa_tiled::Geo& g);

// dx [N, C, H, W] (allocated, contiguous) = the HardTanh input gradient for contiguous gy.
void input_grad(const at::Tensor& x, const at::Tensor& f, const at::Tensor& gy, at::Tensor& dx,
                const sa_tiled::Geo& g);

// The kernels compiled by NVRTC to PTX for compute capability `arch` ("90"), without a device;
// an empty string and `why` where NVRTC is missing or the compile fails.
std::string ptx_for(const std::string& arch, std::string& why);

// Free and total bytes of CUDA device `index` (the driver's view: what every process leaves).
bool mem_info(int index, uint64_t& free, uint64_t& total, std::string& why);

}  // namespace sa_cuda
