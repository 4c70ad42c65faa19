// Unit tests of the expiry decisions (src/core/expiry.cpp).
#include "core/expiry.hpp"

#include <gtest/gtest.h>

#include <limits>

#include "core/error.hpp"

namespace upstream_token {
namespace {

constexpr Time kNow{seconds(1700000000)};
constexpr Micros kThreshold = seconds(300);
constexpr Time kYear9999End{seconds(253402300799)};
constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();

TEST(Classify, Boundaries) {
    EXPECT_EQ(classify(kNow, kNow + kThreshold, kThreshold, false), Freshness::refresh_due);
    EXPECT_EQ(classify(kNow, kNow + kThreshold + Micros{1}, kThreshold, false), Freshness::fresh);
    EXPECT_EQ(classify(kNow, kNow + kThreshold - Micros{1}, kThreshold, false),
              Freshness::refresh_due);
    EXPECT_EQ(classify(kNow, kNow + Micros{1}, kThreshold, false), Freshness::refresh_due);
    EXPECT_EQ(classify(kNow, kNow, kThreshold, false), Freshness::expired);
    EXPECT_EQ(classify(kNow, kNow - Micros{1}, kThreshold, false), Freshness::expired);
    EXPECT_EQ(classify(kNow, kNow + seconds(3600), kThreshold, false), Freshness::fresh);
}

TEST(Classify, EmptyAccessTokenIsAlwaysExpired) {
    EXPECT_EQ(classify(kNow, kNow + seconds(3600), kThreshold, true), Freshness::expired);
    EXPECT_EQ(classify(kNow, kNow + Micros{1}, kThreshold, true), Freshness::expired);
    EXPECT_EQ(classify(kNow, kNow - seconds(1), kThreshold, true), Freshness::expired);
}

TEST(Classify, ZeroThresholdAndExtremes) {
    EXPECT_EQ(classify(kNow, kNow + Micros{1}, Micros{0}, false), Freshness::fresh);
    EXPECT_EQ(classify(kNow, kNow, Micros{0}, false), Freshness::expired);
    EXPECT_EQ(classify(kNow, kNow + Micros{1}, Micros{-5}, false), Freshness::fresh);
    // Far apart instants must not overflow.
    const Time min{Micros{std::numeric_limits<std::int64_t>::min()}};
    const Time max{Micros{kMax}};
    EXPECT_EQ(classify(min, max, kThreshold, false), Freshness::fresh);
    EXPECT_EQ(classify(max, min, kThreshold, false), Freshness::expired);
    EXPECT_EQ(classify(kNow, max, Micros{kMax}, false), Freshness::refresh_due);
}

TEST(AccessExpiry, Values) {
    EXPECT_EQ(access_expiry(kNow, 3600, seconds(60)), kNow + seconds(3600));
    EXPECT_EQ(access_expiry(kNow, 0, seconds(60)), kNow);
    EXPECT_EQ(classify(kNow, access_expiry(kNow, 0, seconds(60)), kThreshold, false),
              Freshness::expired);
    EXPECT_EQ(access_expiry(kNow, std::nullopt, seconds(60)), kNow + seconds(60));
}

TEST(AccessExpiry, NegativeIsAnError) {
    try {
        access_expiry(kNow, -1, seconds(60));
        FAIL() << "no error";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::invalid_parameter);
    }
    EXPECT_THROW(access_expiry(kNow, std::nullopt, seconds(-1)), Error);
}

TEST(AccessExpiry, AbsurdValuesClampToYear9999) {
    EXPECT_EQ(access_expiry(kNow, kMax, seconds(60)), kYear9999End);
    EXPECT_EQ(access_expiry(kNow, kMax / 1000000, seconds(60)), kYear9999End);
    EXPECT_EQ(access_expiry(kNow, std::nullopt, Micros{kMax}), kYear9999End);
    // Just under the clamp still adds exactly.
    const std::int64_t room = (kYear9999End - kNow).count() / 1000000;
    EXPECT_EQ(access_expiry(kNow, room, seconds(60)), kNow + seconds(room));
    EXPECT_EQ(access_expiry(kNow, room + 1, seconds(60)), kYear9999End);
}

TEST(RefreshExpiry, Precedence) {
    EXPECT_EQ(refresh_expiry(kNow, 100, seconds(200), seconds(300)), kNow + seconds(100));
    EXPECT_EQ(refresh_expiry(kNow, std::nullopt, seconds(200), seconds(300)), kNow + seconds(200));
    EXPECT_EQ(refresh_expiry(kNow, std::nullopt, std::nullopt, seconds(300)), kNow + seconds(300));
}

TEST(RefreshExpiry, ZeroMeansNotStated) {
    // Keycloak offline tokens: refresh_expires_in 0 means no timer, not "already expired".
    EXPECT_EQ(refresh_expiry(kNow, 0, seconds(200), seconds(300)), kNow + seconds(200));
    EXPECT_EQ(refresh_expiry(kNow, 0, std::nullopt, seconds(300)), kNow + seconds(300));
}

TEST(RefreshExpiry, NegativeIsAnError) {
    EXPECT_THROW(refresh_expiry(kNow, -1, seconds(200), seconds(300)), Error);
    EXPECT_THROW(refresh_expiry(kNow, std::nullopt, seconds(-1), seconds(300)), Error);
    EXPECT_THROW(refresh_expiry(kNow, std::nullopt, std::nullopt, seconds(-1)), Error);
    try {
        refresh_expiry(kNow, -5, std::nullopt, seconds(300));
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::invalid_parameter);
    }
}

TEST(RefreshExpiry, AbsurdValuesClamp) {
    EXPECT_EQ(refresh_expiry(kNow, kMax, std::nullopt, seconds(300)), kYear9999End);
    EXPECT_EQ(refresh_expiry(kNow, std::nullopt, Micros{kMax}, seconds(300)), kYear9999End);
    EXPECT_EQ(refresh_expiry(kNow, std::nullopt, std::nullopt, Micros{kMax}), kYear9999End);
}

TEST(RefreshExpiry, DefaultIsIndependentOfAccessToken) {
    // I8: a 5-minute access token does not shorten a 30-day refresh token.
    const Time access = access_expiry(kNow, 300, seconds(3600));
    const Time refresh =
        refresh_expiry(kNow, std::nullopt, std::nullopt, seconds(std::int64_t{30} * 86400));
    EXPECT_GT(refresh, access);
    EXPECT_EQ(refresh, kNow + seconds(std::int64_t{30} * 86400));
}

}  // namespace
}  // namespace upstream_token
