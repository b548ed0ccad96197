// The C ABI's error convention, shared by every file of csrc/: a call returns its result, or
// nullptr / -1 with *err set to a malloc'd message (freed by shiftadd_free_error, in adder.cpp),
// C++ exceptions never crossing into Rust.
#pragma once

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <exception>

namespace shiftadd_ffi {

inline char* copy_message(const char* what) {
  const size_t len = std::strlen(what);
  char* out = static_cast<char*>(std::malloc(len + 1));
  if (out != nullptr) std::memcpy(out, what, len + 1);
  return out;
}

// Run body(); on an exception set *err and return `failed`.
template <typename R, typename F>
R guarded(char** err, R failed, F&& body) {
  *err = nullptr;
  try {
    return body();
  } catch (const c10::Error& e) {
    *err = copy_message(e.what_without_backtrace());
  } catch (const std::exception& e) {
    *err = copy_message(e.what());
  } catch (...) {
    *err = copy_message("unknown C++ exception");
  }
  return failed;
}

}  // namespace shiftadd_ffi
