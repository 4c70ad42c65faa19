// Unit tests of the retry spacing (src/core/backoff.cpp).
#include "core/backoff.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace upstream_token {
namespace {

constexpr Micros kBase = seconds(1);
constexpr Micros kCap = seconds(600);
constexpr Micros kMs{1000};

TEST(Backoff, FirstFailureIsWithinHalfBaseAndBase) {
    EXPECT_EQ(backoff_delay(1, kBase, kCap, 0.0), kBase / 2);
    EXPECT_EQ(backoff_delay(1, kBase, kCap, 0.5), kBase * 3 / 4);
    EXPECT_LE(backoff_delay(1, kBase, kCap, 0.999999), kBase);
    EXPECT_GE(backoff_delay(1, kBase, kCap, 0.999999), kBase * 99 / 100);
}

TEST(Backoff, BoundsForEachFailureCount) {
    for (int f = 1; f <= 40; ++f) {
        Micros upper = kCap;
        if (f < 20) {
            upper = std::min(kCap, Micros{kBase.count() << (f - 1)});
        }
        for (const double r : {0.0, 0.1, 0.5, 0.9, 0.999999}) {
            const Micros d = backoff_delay(f, kBase, kCap, r);
            EXPECT_GE(d, upper / 2) << f << " " << r;
            EXPECT_LE(d, upper) << f << " " << r;
            EXPECT_LE(d, kCap);
        }
    }
}

TEST(Backoff, Doubles) {
    EXPECT_EQ(backoff_delay(2, kBase, kCap, 0.0), kBase);
    EXPECT_EQ(backoff_delay(3, kBase, kCap, 0.0), kBase * 2);
    EXPECT_EQ(backoff_delay(4, kBase, kCap, 0.0), kBase * 4);
}

TEST(Backoff, CapHolds) {
    EXPECT_EQ(backoff_delay(1000, kBase, kCap, 0.0), kCap / 2);
    EXPECT_LE(backoff_delay(1000, kBase, kCap, 0.999999), kCap);
    EXPECT_LE(backoff_delay(std::numeric_limits<int>::max(), kBase, kCap, 0.9), kCap);
    EXPECT_LE(backoff_delay(64, Micros{std::numeric_limits<std::int64_t>::max() / 2}, kCap, 1.0),
              kCap);
}

TEST(Backoff, UpperBoundIsMonotone) {
    Micros previous{0};
    for (int f = 1; f <= 100; ++f) {
        const Micros upper = backoff_delay(f, kBase, kCap, 0.999999999);
        EXPECT_GE(upper, previous) << f;
        previous = upper;
    }
}

TEST(Backoff, NonPositiveFailuresCountAsOne) {
    for (const double r : {0.0, 0.3, 0.7}) {
        EXPECT_EQ(backoff_delay(0, kBase, kCap, r), backoff_delay(1, kBase, kCap, r));
        EXPECT_EQ(backoff_delay(-5, kBase, kCap, r), backoff_delay(1, kBase, kCap, r));
        EXPECT_EQ(backoff_delay(std::numeric_limits<int>::min(), kBase, kCap, r),
                  backoff_delay(1, kBase, kCap, r));
    }
}

TEST(Backoff, AtLeastOneMillisecond) {
    EXPECT_EQ(backoff_delay(1, Micros{0}, kCap, 0.5), kMs);
    EXPECT_EQ(backoff_delay(1, Micros{10}, kCap, 0.5), kMs);
    EXPECT_EQ(backoff_delay(1, Micros{-10}, kCap, 0.5), kMs);
    EXPECT_EQ(backoff_delay(3, kBase, Micros{0}, 0.5), kMs);
}

TEST(Backoff, OddRandomInputsAreClamped) {
    EXPECT_EQ(backoff_delay(1, kBase, kCap, -1.0), kBase / 2);
    EXPECT_EQ(backoff_delay(1, kBase, kCap, std::nan("")), kBase / 2);
    EXPECT_EQ(backoff_delay(1, kBase, kCap, 7.0), kBase);
    EXPECT_EQ(backoff_delay(1, kBase, kCap, std::numeric_limits<double>::infinity()), kBase);
}

TEST(Backoff, JitterSpreadsDelays) {
    EXPECT_NE(backoff_delay(5, kBase, kCap, 0.1), backoff_delay(5, kBase, kCap, 0.9));
}

}  // namespace
}  // namespace upstream_token
