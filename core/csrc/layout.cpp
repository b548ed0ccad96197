// Activation layout (issue 17): NHWC ("channels last") for the passes that are all multiplicative
// (Mult, and Shift's power-of-two convolutions) on the CPU, where oneDNN's convolutions run
// without reordering every input and output and ATen's batch norm vectorises over channels.
// The copy is an ordinary differentiable op: the gradient comes back in the layout the input had.

#include <ATen/ATen.h>

#include "ffi.h"

extern "C" {

// x (4-D) laid out channels-last. Returns a new tensor, or nullptr with *err set.
at::Tensor* shiftadd_channels_last(const at::Tensor* x, char** err) {
  return shiftadd_ffi::guarded<at::Tensor*>(err, nullptr, [&] {
    TORCH_CHECK(x->dim() == 4, "channels_last: expected a 4-D tensor, got ", x->sizes());
    // Not `contiguous(ChannelsLast)`: a one-channel NCHW tensor already counts as channels-last
    // contiguous and would be returned as is, with strides every conv reads as NCHW.
    if (x->suggest_memory_format() == at::MemoryFormat::ChannelsLast) return new at::Tensor(*x);
    return new at::Tensor(x->to(x->options(), /*non_blocking=*/false, /*copy=*/true, at::MemoryFormat::ChannelsLast));
  });
}

// Whether x is laid out channels-last (as the convolutions will read it).
int shiftadd_is_channels_last(const at::Tensor* x) {
  return x->dim() == 4 && x->suggest_memory_format() == at::MemoryFormat::ChannelsLast ? 1 : 0;
}

}  // extern "C"
