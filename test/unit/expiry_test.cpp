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

TEST(RefreshExpirySource, NamesRoundTripAndUnknownIsAnEstimate) {
    for (auto s : {RefreshExpirySource::provider, RefreshExpirySource::application,
                   RefreshExpirySource::estimate}) {
        EXPECT_EQ(parse_refresh_expiry_source(std::string_view(refresh_expiry_source_name(s))), s);
    }
    EXPECT_EQ(parse_refresh_expiry_source(std::nullopt), RefreshExpirySource::estimate);
    EXPECT_EQ(parse_refresh_expiry_source(std::string_view("stated?")),
              RefreshExpirySource::estimate);
}

TEST(LoginRefreshExpiry, StatedByTheStoreCallOrEstimated) {
    const auto stated = login_refresh_expiry(kNow, 100, seconds(200), seconds(300));
    EXPECT_EQ(stated.at, kNow + seconds(100));
    EXPECT_EQ(stated.source, RefreshExpirySource::application);
    const auto by_provider_ttl =
        login_refresh_expiry(kNow, std::nullopt, seconds(200), seconds(300));
    EXPECT_EQ(by_provider_ttl.at, kNow + seconds(200));
    EXPECT_EQ(by_provider_ttl.source, RefreshExpirySource::estimate);
    const auto by_guc = login_refresh_expiry(kNow, 0, std::nullopt, seconds(300));  // 0: not stated
    EXPECT_EQ(by_guc.at, kNow + seconds(300));
    EXPECT_EQ(by_guc.source, RefreshExpirySource::estimate);
    EXPECT_THROW(login_refresh_expiry(kNow, -1, std::nullopt, seconds(300)), Error);
}

TEST(RefreshedRefreshExpiry, AStatedLifetimeAlwaysWins) {
    for (bool rotated : {true, false}) {
        for (auto cur : {RefreshExpirySource::provider, RefreshExpirySource::application,
                         RefreshExpirySource::estimate}) {
            const auto e =
                refreshed_refresh_expiry(kNow, 50, rotated, cur, seconds(200), seconds(300));
            ASSERT_TRUE(e.has_value());
            EXPECT_EQ(e->at, kNow + seconds(50));
            EXPECT_EQ(e->source, RefreshExpirySource::provider);
        }
    }
}

TEST(RefreshedRefreshExpiry, ANewRefreshTokenWithoutLifetimeGetsANewEstimate) {
    // Even when the previous one was stated: the new token's lifetime is unknown.
    const auto e = refreshed_refresh_expiry(kNow, std::nullopt, true, RefreshExpirySource::provider,
                                            seconds(200), seconds(300));
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->at, kNow + seconds(200));
    EXPECT_EQ(e->source, RefreshExpirySource::estimate);
    const auto zero = refreshed_refresh_expiry(kNow, 0, true, RefreshExpirySource::estimate,
                                               std::nullopt, seconds(300));
    ASSERT_TRUE(zero.has_value());
    EXPECT_EQ(zero->at, kNow + seconds(300));
    EXPECT_EQ(zero->source, RefreshExpirySource::estimate);
}

TEST(RefreshedRefreshExpiry, AKeptRefreshTokenMovesItsEstimateOnButKeepsAStatedEnd) {
    const auto moved = refreshed_refresh_expiry(
        kNow, std::nullopt, false, RefreshExpirySource::estimate, seconds(200), seconds(300));
    ASSERT_TRUE(moved.has_value());
    EXPECT_EQ(moved->at, kNow + seconds(200));
    EXPECT_EQ(moved->source, RefreshExpirySource::estimate);
    EXPECT_FALSE(refreshed_refresh_expiry(kNow, std::nullopt, false, RefreshExpirySource::provider,
                                          seconds(200), seconds(300)));
    EXPECT_FALSE(refreshed_refresh_expiry(
        kNow, std::nullopt, false, RefreshExpirySource::application, seconds(200), seconds(300)));
    EXPECT_THROW(refreshed_refresh_expiry(kNow, -3, true, RefreshExpirySource::estimate,
                                          std::nullopt, seconds(300)),
                 Error);
}

TEST(RefreshTokenPastEnd, OnlyAStatedExpiryIsACutOff) {
    const Time end = kNow;
    for (auto s : {RefreshExpirySource::provider, RefreshExpirySource::application}) {
        EXPECT_TRUE(refresh_token_past_end(kNow, end, s)) << "the instant itself counts (I7)";
        EXPECT_TRUE(refresh_token_past_end(kNow + seconds(1), end, s));
        EXPECT_FALSE(refresh_token_past_end(kNow - Micros{1}, end, s));
    }
    EXPECT_FALSE(refresh_token_past_end(kNow, end, RefreshExpirySource::estimate));
    EXPECT_FALSE(refresh_token_past_end(kNow + seconds(std::int64_t{365} * 86400), end,
                                        RefreshExpirySource::estimate));
}

}  // namespace
}  // namespace upstream_token
