// Overflow-checked size arithmetic for code that computes sizes from untrusted numbers (wire
// headers, element counts a payload claims). Each helper either returns the exact result or
// raises the error kind the caller names (WireFormatError in a decoder, UsageError for a caller's
// argument), so a size computation can never wrap into a small, plausible value.
//
//   checked_mul<WireFormatError>(n, 4, "payload size")   n * 4, or WireFormatError
//   mul_overflows(a, b, &r)                               the bare test (true = it would wrap)
//
// Cost: one compiler builtin (__builtin_*_overflow) per operation.
#pragma once

#include <cstdint>
#include <type_traits>

#include "ringpress/error.h"

namespace ringpress {

template <class T>
constexpr bool mul_overflows(T a, T b, T* out) noexcept {
  static_assert(std::is_unsigned_v<T>, "checked arithmetic is for unsigned sizes");
  return __builtin_mul_overflow(a, b, out);
}
template <class T>
constexpr bool add_overflows(T a, T b, T* out) noexcept {
  static_assert(std::is_unsigned_v<T>, "checked arithmetic is for unsigned sizes");
  return __builtin_add_overflow(a, b, out);
}

// a * b, or ErrType ("<what> overflows: a x b").
template <class ErrType, class T>
T checked_mul(T a, T b, const char* what) {
  T r{};
  if (mul_overflows(a, b, &r)) {
    detail::throw_error(ErrType::kKind, current_error_context(),
                        detail::str_cat(what, " overflows: ", a, " x ", b), __FILE__, __LINE__);
  }
  return r;
}
// a + b, or ErrType ("<what> overflows: a + b").
template <class ErrType, class T>
T checked_add(T a, T b, const char* what) {
  T r{};
  if (add_overflows(a, b, &r)) {
    detail::throw_error(ErrType::kKind, current_error_context(),
                        detail::str_cat(what, " overflows: ", a, " + ", b), __FILE__, __LINE__);
  }
  return r;
}

}  // namespace ringpress
