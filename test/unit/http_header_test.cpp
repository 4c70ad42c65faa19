// Unit tests of response header parsing (src/core/http_header.cpp): Retry-After values and
// the header-line tracking behind libcurl's header callback.
#include "core/http_header.hpp"

#include <gtest/gtest.h>

#include <string>

namespace upstream_token {
namespace {

// 2015-10-21T07:28:00Z, the instant of the RFC example date.
constexpr Time kNow{seconds(1445412480)};

TEST(RetryAfter, DeltaSeconds) {
    EXPECT_EQ(parse_retry_after("120", kNow), seconds(120));
    EXPECT_EQ(parse_retry_after("0", kNow), Micros{0});
    EXPECT_EQ(parse_retry_after(" 5 ", kNow), seconds(5));
    EXPECT_EQ(parse_retry_after("86400", kNow), seconds(86400));
    EXPECT_EQ(parse_retry_after("86401", kNow), seconds(86400));
    EXPECT_EQ(parse_retry_after("99999999999999999999999999", kNow), seconds(86400));
}

TEST(RetryAfter, ImfFixdate) {
    EXPECT_EQ(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", kNow), Micros{0});
    EXPECT_EQ(parse_retry_after("Wed, 21 Oct 2015 07:29:00 GMT", kNow), seconds(60));
    EXPECT_EQ(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", kNow + Micros{500000}), Micros{0});
    EXPECT_EQ(parse_retry_after("Wed, 21 Oct 2015 07:28:01 GMT", kNow + Micros{500000}),
              Micros{500000});
    EXPECT_EQ(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", kNow), Micros{0});
    EXPECT_EQ(parse_retry_after("Thu, 22 Oct 2015 07:28:00 GMT", kNow), seconds(86400));
    EXPECT_EQ(parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT", kNow), seconds(86400));
    // Leap day, and a date across a year boundary.
    EXPECT_EQ(parse_retry_after("Mon, 29 Feb 2016 00:00:10 GMT", Time{seconds(1456704000)}),
              seconds(10));
    EXPECT_EQ(parse_retry_after("Sat, 01 Jan 2000 00:00:00 GMT", Time{seconds(946684790)}),
              seconds(10));
}

TEST(RetryAfter, ObsoleteDateFormats) {
    EXPECT_EQ(parse_retry_after("Wednesday, 21-Oct-15 07:29:00 GMT", kNow), seconds(60));
    EXPECT_EQ(parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", kNow), Micros{0});
    EXPECT_EQ(parse_retry_after("Wed Oct 21 07:29:00 2015", kNow), seconds(60));
    EXPECT_EQ(parse_retry_after("Sun Nov  6 08:49:37 1994", kNow), Micros{0});
}

TEST(RetryAfter, Garbage) {
    for (const char* h :
         {"", "   ", "-1", "1.5", "+5", "soon", "120s", "0x10", "Wed, 21 Oct 2015 07:28:00",
          "Wed, 21 Oct 2015 07:28:00 UTC", "Wed, 32 Oct 2015 07:28:00 GMT",
          "Wed, 29 Feb 2015 07:28:00 GMT", "Wed, 21 Foo 2015 07:28:00 GMT",
          "Wed, 21 Oct 2015 24:00:00 GMT", "Xyz, 21 Oct 2015 07:28:00 GMT",
          "wed, 21 oct 2015 07:28:00 gmt", "Wed, 21 Oct 2015 07:28:00 GMT extra",
          "Wed,  21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 15 07:28:00 GMT"}) {
        EXPECT_FALSE(parse_retry_after(h, kNow)) << h;
    }
    EXPECT_FALSE(parse_retry_after(std::string(1000, '1'), kNow));
}

// Feeds header lines as libcurl delivers them and returns the Retry-After kept.
std::string tracked(std::initializer_list<std::string_view> lines) {
    std::string value = "untouched";
    for (const auto line : lines) {
        track_retry_after(line, value);
    }
    return value;
}

TEST(HeaderLines, RetryAfterOfTheFinalResponse) {
    EXPECT_EQ(tracked({"HTTP/1.1 429 Too Many Requests\r\n", "Retry-After: 120\r\n", "\r\n"}),
              "120");
    EXPECT_EQ(tracked({"HTTP/2 503\r\n", "retry-after:\t 5 \t\r\n"}), "5");
    EXPECT_EQ(tracked({"HTTP/2 503\r\n", "RETRY-AFTER: Wed, 21 Oct 2015 07:28:00 GMT\r\n"}),
              "Wed, 21 Oct 2015 07:28:00 GMT");
    // An interim response's header does not leak into the final one.
    EXPECT_EQ(tracked({"HTTP/1.1 100 Continue\r\n", "Retry-After: 9\r\n", "\r\n",
                       "HTTP/1.1 500 Internal Server Error\r\n", "\r\n"}),
              "");
    // The last of several wins; an empty value is kept as empty.
    EXPECT_EQ(tracked({"HTTP/1.1 429\r\n", "Retry-After: 1\r\n", "Retry-After: 2\r\n"}), "2");
    EXPECT_EQ(tracked({"HTTP/1.1 429\r\n", "Retry-After:\r\n"}), "");
}

TEST(HeaderLines, OtherLinesChangeNothing) {
    EXPECT_EQ(tracked({"Content-Type: application/json\r\n"}), "untouched");
    EXPECT_EQ(tracked({"X-Retry-After: 5\r\n", "Retry-After 5\r\n", "Retry-Afte"}), "untouched");
    EXPECT_EQ(tracked({""}), "untouched");
    EXPECT_EQ(tracked({"http/1.1 200 OK\r\n"}), "");  // case-insensitive, as before
}

TEST(HeaderLines, LongValuesAreCutAndThenRejected) {
    const std::string line = "Retry-After: " + std::string(1000, '7') + "\r\n";
    const std::string v = tracked({line});
    EXPECT_EQ(v.size(), kMaxRetryAfterHeaderLine);
    EXPECT_FALSE(parse_retry_after(std::string(kMaxRetryAfterHeaderLine + 1, '7'), kNow));
    EXPECT_EQ(parse_retry_after(v, kNow), seconds(86400));
}

TEST(HeaderLines, BinaryBytesAreHarmless) {
    static constexpr char kLine[] = "Retry-After: \0\xff\x80 1\r\n";
    const std::string v = tracked({std::string_view(kLine, sizeof kLine - 1)});
    EXPECT_EQ(v, std::string("\0\xff\x80 1", 5));
    EXPECT_FALSE(parse_retry_after(v, kNow));
}

}  // namespace
}  // namespace upstream_token
