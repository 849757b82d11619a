// check.h — tiny test helpers for the emulator checks (random data, relative error, report).
#pragma once
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace chk {
inline std::mt19937_64& rng() {
    static std::mt19937_64 r(12345);
    return r;
}
inline std::vector<float> randn(size_t n, float scale = 1.0f) {
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng());
    return v;
}
inline std::vector<float> uniform(size_t n, float lo, float hi) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng());
    return v;
}
inline int failures = 0;
inline int checks = 0;
// ||a - ref|| / ||ref|| (ref in double); NaN/Inf in `a` always fails.
inline double rel_err(const std::vector<float>& a, const std::vector<double>& ref) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        if (!std::isfinite(a[i])) return INFINITY;
        double d = a[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}
inline void expect(const std::string& name, const std::vector<float>& a, const std::vector<double>& ref,
                   double tol) {
    checks++;
    if (a.size() != ref.size()) {
        std::printf("FAIL %-60s size %zu vs %zu\n", name.c_str(), a.size(), ref.size());
        failures++;
        return;
    }
    double e = rel_err(a, ref);
    bool ok = e <= tol;
    std::printf("%s %-60s rel %.3e (tol %.0e)\n", ok ? "ok  " : "FAIL", name.c_str(), e, tol);
    if (!ok) failures++;
}
inline void expect_true(const std::string& name, bool ok) {
    checks++;
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", name.c_str());
    if (!ok) failures++;
}
inline int finish() {
    std::printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
}  // namespace chk
