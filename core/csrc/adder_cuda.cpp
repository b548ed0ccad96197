// The Add kernels of adder_tiled.h on a CUDA device: compiled by NVRTC the first time a device
// needs them, launched through the CUDA driver API.
//
// Nothing here is needed at build time: every build compiles this file (no CUDA headers, no
// nvcc), and the libraries are found when a CUDA tensor first reaches an Add layer — NVRTC through
// libtorch's own `libcaffe2_nvrtc.so` (which links the NVRTC of the wheel's CUDA) or by its
// soname, the driver as `libcuda.so.1`. The kernels are compiled for the device's compute
// capability as PTX and cached per device for the process. Launches go to the legacy default
// stream, the stream every libtorch op of this engine runs on (it never sets another), so they
// are ordered with the ops around them.
//
// Where any of this fails (no NVRTC, a compile error), `available` says why once on stderr and
// the caller falls back to the ATen formulation: slower, never wrong.

#include <ATen/ATen.h>

#include <dlfcn.h>

#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "adder_cuda.h"

namespace {

const char* const kSource =
#include "adder_tiled_src.inc"
    ;

// The few driver and NVRTC entry points, declared here (their ABI is C and stable).
using CUresult = int;
using CUdevice = int;
using CUcontext = void*;
using CUmodule = void*;
using CUfunction = void*;
using CUstream = void*;
using nvrtcResult = int;
using nvrtcProgram = void*;

struct Api {
  CUresult (*cuInit)(unsigned);
  CUresult (*cuDeviceGet)(CUdevice*, int);
  CUresult (*cuDeviceGetAttribute)(int*, int, CUdevice);
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext*, CUdevice);
  CUresult (*cuCtxSetCurrent)(CUcontext);
  CUresult (*cuModuleLoadData)(CUmodule*, const void*);
  CUresult (*cuModuleGetFunction)(CUfunction*, CUmodule, const char*);
  CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                             CUstream, void**, void**);
  CUresult (*cuGetErrorString)(CUresult, const char**);
  CUresult (*cuMemGetInfo)(size_t*, size_t*);
  nvrtcResult (*nvrtcCreateProgram)(nvrtcProgram*, const char*, const char*, int, const char* const*,
                                    const char* const*);
  nvrtcResult (*nvrtcCompileProgram)(nvrtcProgram, int, const char* const*);
  nvrtcResult (*nvrtcGetProgramLogSize)(nvrtcProgram, size_t*);
  nvrtcResult (*nvrtcGetProgramLog)(nvrtcProgram, char*);
  nvrtcResult (*nvrtcGetPTXSize)(nvrtcProgram, size_t*);
  nvrtcResult (*nvrtcGetPTX)(nvrtcProgram, char*);
  nvrtcResult (*nvrtcDestroyProgram)(nvrtcProgram*);
  const char* (*nvrtcGetErrorString)(nvrtcResult);
};

constexpr int kComputeMajor = 75;  // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
constexpr int kComputeMinor = 76;  // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR

template <typename Fn>
bool bind(void* handle, const char* name, Fn& out, std::string& why) {
  out = reinterpret_cast<Fn>(dlsym(handle, name));
  if (out == nullptr) why = std::string("no symbol ") + name;
  return out != nullptr;
}

// The libraries, each loaded once; `why` says what is missing. NVRTC alone compiles (no device
// needed: the suite checks the kernels compile); the driver loads and launches.
struct Loaded {
  Api api{};
  std::string why;
};

bool load_nvrtc(Loaded& l) {
  // libtorch_cuda links the NVRTC of its CUDA, so by its soname it is usually loaded already.
  void* nvrtc = nullptr;
  for (const char* name : {"libnvrtc.so.13", "libnvrtc.so.12", "libcaffe2_nvrtc.so", "libnvrtc.so"}) {
    nvrtc = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (nvrtc != nullptr && dlsym(nvrtc, "nvrtcCreateProgram") != nullptr) break;
    nvrtc = nullptr;
  }
  if (nvrtc == nullptr) {
    l.why = "NVRTC (libnvrtc, or libtorch's libcaffe2_nvrtc.so) cannot be loaded";
    return false;
  }
  Api& a = l.api;
  std::string& w = l.why;
  return bind(nvrtc, "nvrtcCreateProgram", a.nvrtcCreateProgram, w) &&
         bind(nvrtc, "nvrtcCompileProgram", a.nvrtcCompileProgram, w) &&
         bind(nvrtc, "nvrtcGetProgramLogSize", a.nvrtcGetProgramLogSize, w) &&
         bind(nvrtc, "nvrtcGetProgramLog", a.nvrtcGetProgramLog, w) &&
         bind(nvrtc, "nvrtcGetPTXSize", a.nvrtcGetPTXSize, w) && bind(nvrtc, "nvrtcGetPTX", a.nvrtcGetPTX, w) &&
         bind(nvrtc, "nvrtcDestroyProgram", a.nvrtcDestroyProgram, w) &&
         bind(nvrtc, "nvrtcGetErrorString", a.nvrtcGetErrorString, w);
}

bool load_driver(Loaded& l) {
  void* cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (cuda == nullptr) {
    l.why = "the CUDA driver (libcuda.so.1) cannot be loaded";
    return false;
  }
  Api& a = l.api;
  std::string& w = l.why;
  const bool ok = bind(cuda, "cuInit", a.cuInit, w) && bind(cuda, "cuDeviceGet", a.cuDeviceGet, w) &&
                  bind(cuda, "cuDeviceGetAttribute", a.cuDeviceGetAttribute, w) &&
                  bind(cuda, "cuDevicePrimaryCtxRetain", a.cuDevicePrimaryCtxRetain, w) &&
                  bind(cuda, "cuCtxSetCurrent", a.cuCtxSetCurrent, w) &&
                  bind(cuda, "cuModuleLoadData", a.cuModuleLoadData, w) &&
                  bind(cuda, "cuModuleGetFunction", a.cuModuleGetFunction, w) &&
                  bind(cuda, "cuLaunchKernel", a.cuLaunchKernel, w) &&
                  bind(cuda, "cuGetErrorString", a.cuGetErrorString, w) &&
                  bind(cuda, "cuMemGetInfo_v2", a.cuMemGetInfo, w);
  if (ok && a.cuInit(0) != 0) {
    w = "cuInit failed";
    return false;
  }
  return ok;
}

const Loaded& nvrtc_api() {
  static const Loaded loaded = [] {
    Loaded l;
    load_nvrtc(l);
    return l;
  }();
  return loaded;
}

const Loaded& api() {
  static const Loaded loaded = [] {
    Loaded l;
    if (load_nvrtc(l)) load_driver(l);
    return l;
  }();
  return loaded;
}

// The kernels' PTX for compute capability `arch` (e.g. "90"), or an empty string and `why`.
std::string compile_ptx(const Api& a, const std::string& arch, std::string& why) {
  nvrtcProgram prog = nullptr;
  if (a.nvrtcCreateProgram(&prog, kSource, "adder_tiled.cu", 0, nullptr, nullptr) != 0) {
    why = "nvrtcCreateProgram failed";
    return {};
  }
  const std::string flag = "--gpu-architecture=compute_" + arch;
  const char* opts[] = {flag.c_str(), "--std=c++17"};
  const nvrtcResult compiled = a.nvrtcCompileProgram(prog, 2, opts);
  if (compiled != 0) {
    size_t n = 0;
    a.nvrtcGetProgramLogSize(prog, &n);
    std::string log(n, '\0');
    if (n > 0) a.nvrtcGetProgramLog(prog, log.data());
    why = std::string("NVRTC: ") + a.nvrtcGetErrorString(compiled) + ": " + log;
    a.nvrtcDestroyProgram(&prog);
    return {};
  }
  size_t n = 0;
  a.nvrtcGetPTXSize(prog, &n);
  std::string ptx(n, '\0');
  a.nvrtcGetPTX(prog, ptx.data());
  a.nvrtcDestroyProgram(&prog);
  return ptx;
}

// One device's compiled module and its kernels (by name).
struct Module {
  CUcontext ctx = nullptr;
  std::map<std::string, CUfunction> functions;
  std::string why;  // empty when usable
};

std::string cu_error(const Api& a, CUresult r) {
  const char* s = nullptr;
  a.cuGetErrorString(r, &s);
  return s != nullptr ? s : ("CUDA error " + std::to_string(r));
}

Module build_module(const Api& a, int index) {
  Module m;
  CUdevice dev = 0;
  int major = 0, minor = 0;
  if (a.cuDeviceGet(&dev, index) != 0 || a.cuDeviceGetAttribute(&major, kComputeMajor, dev) != 0 ||
      a.cuDeviceGetAttribute(&minor, kComputeMinor, dev) != 0 || a.cuDevicePrimaryCtxRetain(&m.ctx, dev) != 0) {
    m.why = "device " + std::to_string(index) + " cannot be queried";
    return m;
  }
  a.cuCtxSetCurrent(m.ctx);
  const std::string ptx = compile_ptx(a, std::to_string(major) + std::to_string(minor), m.why);
  if (ptx.empty()) return m;
  CUmodule module = nullptr;
  const CUresult loaded = a.cuModuleLoadData(&module, ptx.data());
  if (loaded != 0) {
    m.why = "loading the PTX: " + cu_error(a, loaded);
    return m;
  }
  for (const char* stem : {"sa_add_forward_tiled_", "sa_add_forward_direct_", "sa_add_input_grad_"}) {
    for (const char* suffix : {"f32", "f64"}) {
      const std::string name = std::string(stem) + suffix;
      CUfunction fn = nullptr;
      const CUresult r = a.cuModuleGetFunction(&fn, module, name.c_str());
      if (r != 0) {
        m.why = "kernel " + name + ": " + cu_error(a, r);
        return m;
      }
      m.functions[name] = fn;
    }
  }
  return m;
}

std::mutex& modules_lock() {
  static std::mutex lock;
  return lock;
}

// The module of `index`, built on first use; nullptr (and the reason, said once) when unusable.
const Module* module_for(int index) {
  static std::map<int, Module> modules;
  std::lock_guard<std::mutex> guard(modules_lock());
  auto it = modules.find(index);
  if (it == modules.end()) {
    const Loaded& l = api();
    Module m;
    if (!l.why.empty()) {
      m.why = l.why;
    } else {
      m = build_module(l.api, index);
    }
    if (!m.why.empty()) {
      std::fprintf(stderr, "shiftadd: the Add kernels cannot run on cuda:%d (%s); using the ATen formulation\n",
                   index, m.why.c_str());
    }
    it = modules.emplace(index, std::move(m)).first;
  }
  return it->second.why.empty() ? &it->second : nullptr;
}

const char* suffix(const at::Tensor& t) { return t.scalar_type() == at::kDouble ? "f64" : "f32"; }

void launch(const Module& m, const std::string& name, int64_t blocks, int threads, void** args) {
  const Api& a = api().api;
  TORCH_CHECK(blocks <= 0x7fffffffLL, "adder_conv2d: ", blocks, " blocks exceed one CUDA launch");
  if (blocks == 0) return;
  a.cuCtxSetCurrent(m.ctx);
  const CUresult r = a.cuLaunchKernel(m.functions.at(name), static_cast<unsigned>(blocks), 1, 1,
                                      static_cast<unsigned>(threads), 1, 1, 0, nullptr, args, nullptr);
  TORCH_CHECK(r == 0, "adder_conv2d: launching ", name, ": ", cu_error(a, r));
}

}  // namespace

namespace sa_cuda {

std::string ptx_for(const std::string& arch, std::string& why) {
  const Loaded& l = nvrtc_api();
  if (!l.why.empty()) {
    why = l.why;
    return {};
  }
  return compile_ptx(l.api, arch, why);
}

bool available(const at::Tensor& t) {
  return t.is_cuda() && (t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble) &&
         module_for(t.get_device()) != nullptr;
}

void forward(const at::Tensor& x, const at::Tensor& f, at::Tensor& y, const sa_tiled::Geo& g) {
  const Module* m = module_for(x.get_device());
  TORCH_CHECK(m != nullptr, "adder_conv2d: the CUDA kernels are not available");
  void* xp = x.data_ptr();
  void* fp = f.data_ptr();
  void* yp = y.data_ptr();
  sa_tiled::Geo geo = g;
  void* args[] = {&xp, &fp, &yp, &geo};
  if (sa_tiled::direct(g)) {
    const int64_t total = g.n * g.o * g.l;
    launch(*m, std::string("sa_add_forward_direct_") + suffix(x),
           sa_tiled::div_up(total, sa_tiled::DIRECT_THREADS), sa_tiled::DIRECT_THREADS, args);
  } else {
    launch(*m, std::string("sa_add_forward_tiled_") + suffix(x), sa_tiled::tiled_blocks(g), sa_tiled::THREADS, args);
  }
}

void input_grad(const at::Tensor& x, const at::Tensor& f, const at::Tensor& gy, at::Tensor& dx,
                const sa_tiled::Geo& g) {
  const Module* m = module_for(x.get_device());
  TORCH_CHECK(m != nullptr, "adder_conv2d: the CUDA kernels are not available");
  void* xp = x.data_ptr();
  void* fp = f.data_ptr();
  void* gp = gy.data_ptr();
  void* dp = dx.data_ptr();
  sa_tiled::Geo geo = g;
  void* args[] = {&xp, &fp, &gp, &dp, &geo};
  const int64_t total = g.n * g.c * g.h * g.w;
  launch(*m, std::string("sa_add_input_grad_") + suffix(x), sa_tiled::div_up(total, sa_tiled::DIRECT_THREADS),
         sa_tiled::DIRECT_THREADS, args);
}

bool mem_info(int index, uint64_t& free, uint64_t& total, std::string& why) {
  const Loaded& l = api();
  if (!l.why.empty()) {
    why = l.why;
    return false;
  }
  const Api& a = l.api;
  CUdevice dev = 0;
  CUcontext ctx = nullptr;
  if (a.cuDeviceGet(&dev, index) != 0 || a.cuDevicePrimaryCtxRetain(&ctx, dev) != 0) {
    why = "device " + std::to_string(index) + " cannot be queried";
    return false;
  }
  a.cuCtxSetCurrent(ctx);
  size_t f = 0, t = 0;
  const CUresult r = a.cuMemGetInfo(&f, &t);
  if (r != 0) {
    why = "cuMemGetInfo: " + cu_error(a, r);
    return false;
  }
  free = f;
  total = t;
  return true;
}

}  // namespace sa_cuda
