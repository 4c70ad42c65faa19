// The proactive schedule: spread inside the window, stable per token version, and callers
// waiting only once the proactive refresh is overdue.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "core/schedule.hpp"

namespace ut = upstream_token;

namespace {
const ut::Time kNow{ut::seconds(1'700'000'000)};
const ut::Micros kThreshold = ut::seconds(300);
}  // namespace

TEST(Schedule, SpreadUnitIsStableAndInRange) {
    for (int i = 0; i < 1000; ++i) {
        const std::string s = "session-" + std::to_string(i);
        const double u = ut::spread_unit("p", s, 1);
        EXPECT_GE(u, 0.0);
        EXPECT_LT(u, 1.0);
        EXPECT_EQ(u, ut::spread_unit("p", s, 1));
    }
    EXPECT_NE(ut::spread_unit("p", "s", 1), ut::spread_unit("p", "s", 2));
    EXPECT_NE(ut::spread_unit("p", "s", 1), ut::spread_unit("q", "s", 1));
}

TEST(Schedule, TokensIssuedTogetherSpreadOverMoreThanHalfTheWindow) {
    double lo = 1.0, hi = 0.0;
    for (int i = 0; i < 500; ++i) {
        const double u = ut::spread_unit("p", "s" + std::to_string(i), 1);
        lo = std::min(lo, u);
        hi = std::max(hi, u);
    }
    const ut::Time exp = kNow + ut::seconds(600);
    const auto first = ut::proactive_due(kNow, exp, kThreshold, lo);
    const auto last = ut::proactive_due(kNow, exp, kThreshold, hi);
    EXPECT_GT((last - first).count(), kThreshold.count() / 2);
}

TEST(Schedule, DueTimeStaysInsideTheWindowBeforeTheUrgentPoint) {
    const ut::Time exp = kNow + ut::seconds(600);
    EXPECT_EQ(ut::proactive_due(kNow, exp, kThreshold, 0.0), exp - kThreshold);
    const auto latest = ut::proactive_due(kNow, exp, kThreshold, 0.999999);
    EXPECT_LT(latest, exp);
    const auto urgent_remaining =
        ut::Micros{static_cast<std::int64_t>(kThreshold.count() * ut::kUrgentShare)};
    EXPECT_GT(exp - latest, urgent_remaining);
}

TEST(Schedule, CallerWaitsOnlyWhenExpiredOrUrgent) {
    const ut::Time exp = kNow + ut::seconds(200);
    EXPECT_FALSE(ut::caller_must_wait(ut::Freshness::fresh, kNow, exp, kThreshold));
    EXPECT_FALSE(ut::caller_must_wait(ut::Freshness::refresh_due, kNow, exp, kThreshold));
    EXPECT_TRUE(
        ut::caller_must_wait(ut::Freshness::refresh_due, kNow, kNow + ut::seconds(75), kThreshold));
    EXPECT_FALSE(ut::caller_must_wait(ut::Freshness::refresh_due, kNow,
                                      kNow + ut::seconds(75) + ut::Micros{1}, kThreshold));
    EXPECT_TRUE(ut::caller_must_wait(ut::Freshness::expired, kNow, kNow, kThreshold));
}

TEST(Schedule, ShortLivedTokensAreNotRefreshedAtOnce) {
    // A 60 s token under a 300 s threshold: the threshold shrinks to half its life.
    const ut::Time exp = kNow + ut::seconds(60);
    EXPECT_EQ(ut::effective_threshold(kThreshold, kNow, exp), ut::seconds(30));
    EXPECT_EQ(ut::effective_threshold(kThreshold, kNow, kNow + ut::seconds(3600)), kThreshold);
    EXPECT_GE(ut::proactive_due(kNow, exp, kThreshold, 0.0), kNow + ut::seconds(30));
    EXPECT_LT(ut::proactive_due(kNow, exp, kThreshold, 0.99), exp);
    // A provider that grants no lifetime at all is still not refreshed in a loop.
    EXPECT_EQ(ut::effective_threshold(kThreshold, kNow, kNow), ut::Micros{0});
    EXPECT_EQ(ut::proactive_due(kNow, kNow, kThreshold, 0.5), kNow + ut::kMinRefreshSpacing);
    // A token the application stored: only its remaining time is known, the threshold stands.
    EXPECT_EQ(ut::effective_threshold(kThreshold, std::nullopt, exp), kThreshold);
    EXPECT_EQ(ut::proactive_due(std::nullopt, exp, kThreshold, 0.0), exp - kThreshold);
}

TEST(Schedule, KeepAliveFallsBetweenAFifthAndHalfTheIdleLifetime) {
    const ut::Micros idle = ut::seconds(1800);
    for (double u : {0.0, 0.25, 0.5, 0.999}) {
        const auto due = ut::keep_alive_due(kNow, idle, u);
        EXPECT_LE((due - kNow).count(), idle.count() / 2) << u;
        EXPECT_GE((due - kNow).count(), idle.count() / 5) << u;
    }
    EXPECT_EQ(ut::keep_alive_due(kNow, idle, 0.0), kNow + ut::seconds(900));
    // A tiny idle lifetime never makes a refresh loop.
    EXPECT_EQ(ut::keep_alive_due(kNow, ut::Micros{10}, 0.5), kNow + ut::kKeepAliveMinSpacing);
}
