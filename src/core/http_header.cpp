// Response header parsing (see http_header.hpp): Retry-After values and the header lines
// libcurl hands over one at a time. Everything here fails softly: a header a provider got
// wrong is ignored, never an error.
#include "core/http_header.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <string>

namespace upstream_token {

namespace {

constexpr std::size_t kMaxRetryAfterHeader = 256;
constexpr std::int64_t kMaxRetryAfterSeconds = 86400;  // one day
constexpr std::int64_t kMicrosPerSecond = 1000000;

// ---- HTTP-date (RFC 9110 5.6.7) ----

// Days from 1970-01-01 to y-m-d (proleptic Gregorian, y >= 1).
std::int64_t days_since_epoch(int y, int m, int d) noexcept {
    const auto days_before_year = [](std::int64_t year) {
        const std::int64_t p = year - 1;
        return (365 * p) + (p / 4) - (p / 100) + (p / 400);
    };
    static constexpr std::array<int, 12> kCumulative = {0,   31,  59,  90,  120, 151,
                                                        181, 212, 243, 273, 304, 334};
    const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    std::int64_t days = days_before_year(y) - days_before_year(1970);
    days += kCumulative.at(static_cast<std::size_t>(m - 1)) + (leap && m > 2 ? 1 : 0);
    return days + d - 1;
}

// Number of days in month m of year y.
int days_in_month(int y, int m) noexcept {
    static constexpr std::array<int, 12> kDays = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return kDays.at(static_cast<std::size_t>(m - 1)) + (m == 2 && leap ? 1 : 0);
}

// A forward-only reader over the header text; every step fails softly (returns false).
class Cursor {
  public:
    // Starts reading at the beginning of s.
    explicit Cursor(std::string_view s) : s_(s) {}

    // Consumes an exact literal.
    bool lit(std::string_view l) {
        if (s_.substr(pos_, l.size()) != l) {
            return false;
        }
        pos_ += l.size();
        return true;
    }

    // Consumes exactly n digits into *out.
    bool digits(std::size_t n, int* out) {
        if (pos_ + n > s_.size()) {
            return false;
        }
        int v = 0;
        for (std::size_t i = 0; i < n; ++i) {
            const char c = s_[pos_ + i];
            if (c < '0' || c > '9') {
                return false;
            }
            v = (v * 10) + (c - '0');
        }
        pos_ += n;
        *out = v;
        return true;
    }

    // Consumes one of the words in `names`, storing its index (case-sensitive, RFC 9110).
    template <std::size_t N>
    bool one_of(const std::array<std::string_view, N>& names, int* index) {
        for (std::size_t i = 0; i < N; ++i) {
            if (lit(names.at(i))) {
                *index = static_cast<int>(i);
                return true;
            }
        }
        return false;
    }

    // Whether the whole text was consumed (formats allow nothing after the date).
    bool done() const noexcept { return pos_ == s_.size(); }

    // The next character without consuming it, '\0' at the end.
    char peek() const noexcept { return pos_ < s_.size() ? s_[pos_] : '\0'; }

  private:
    std::string_view s_;
    std::size_t pos_ = 0;
};

constexpr std::array<std::string_view, 7> kDayNames = {"Mon", "Tue", "Wed", "Thu",
                                                       "Fri", "Sat", "Sun"};
constexpr std::array<std::string_view, 7> kLongDayNames = {
    "Wednesday", "Thursday", "Saturday", "Tuesday", "Monday", "Friday", "Sunday"};
constexpr std::array<std::string_view, 12> kMonths = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

struct CivilTime {
    int year = 0;
    int month = 0;  // 1..12
    int day = 0;
    int hour = 0;
    int minute = 0;
    int second = 0;
};

// Parses "HH:MM:SS".
bool read_time_of_day(Cursor& c, CivilTime& t) {
    return c.digits(2, &t.hour) && c.lit(":") && c.digits(2, &t.minute) && c.lit(":") &&
           c.digits(2, &t.second);
}

// IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT".
bool read_imf_fixdate(std::string_view s, CivilTime& t) {
    Cursor c(s);
    int ignored = 0;
    return c.one_of(kDayNames, &ignored) && c.lit(", ") && c.digits(2, &t.day) && c.lit(" ") &&
           c.one_of(kMonths, &t.month) && c.lit(" ") && c.digits(4, &t.year) && c.lit(" ") &&
           read_time_of_day(c, t) && c.lit(" GMT") && c.done();
}

// Obsolete RFC 850 date: "Sunday, 06-Nov-94 08:49:37 GMT"; the two-digit year is placed in
// the century that puts it at most 50 years ahead of now (RFC 9110 5.6.7).
bool read_rfc850(std::string_view s, int now_year, CivilTime& t) {
    Cursor c(s);
    int ignored = 0;
    int yy = 0;
    if (!(c.one_of(kLongDayNames, &ignored) && c.lit(", ") && c.digits(2, &t.day) && c.lit("-") &&
          c.one_of(kMonths, &t.month) && c.lit("-") && c.digits(2, &yy) && c.lit(" ") &&
          read_time_of_day(c, t) && c.lit(" GMT") && c.done())) {
        return false;
    }
    int year = ((now_year / 100) * 100) + yy;
    if (year > now_year + 50) {
        year -= 100;
    }
    t.year = year;
    return true;
}

// Obsolete asctime date: "Sun Nov  6 08:49:37 1994".
bool read_asctime(std::string_view s, CivilTime& t) {
    Cursor c(s);
    int ignored = 0;
    if (!(c.one_of(kDayNames, &ignored) && c.lit(" ") && c.one_of(kMonths, &t.month) &&
          c.lit(" "))) {
        return false;
    }
    if (c.peek() == ' ') {
        if (!(c.lit(" ") && c.digits(1, &t.day))) {
            return false;
        }
    } else if (!c.digits(2, &t.day)) {
        return false;
    }
    return c.lit(" ") && read_time_of_day(c, t) && c.lit(" ") && c.digits(4, &t.year) && c.done();
}

// Unix seconds of an HTTP-date in any of the three formats RFC 9110 requires us to accept.
std::optional<std::int64_t> parse_http_date(std::string_view s, Time now) {
    // Rough current year, only used for the two-digit years of RFC 850 dates.
    const std::int64_t now_s = now.time_since_epoch().count() / kMicrosPerSecond;
    const int now_year = static_cast<int>(1970 + (now_s / 31556952));

    CivilTime t;
    if (!read_imf_fixdate(s, t) && !read_rfc850(s, now_year, t) && !read_asctime(s, t)) {
        return std::nullopt;
    }
    t.month += 1;  // index to 1..12
    if (t.year < 1 || t.day < 1 || t.day > days_in_month(t.year, t.month) || t.hour > 23 ||
        t.minute > 59 || t.second > 60) {
        return std::nullopt;
    }
    return (days_since_epoch(t.year, t.month, t.day) * 86400) +
           (static_cast<std::int64_t>(t.hour) * 3600) + (static_cast<std::int64_t>(t.minute) * 60) +
           t.second;
}

// ASCII case-insensitive prefix test for header names (locale-independent).
bool starts_with_ci(std::string_view data, std::string_view prefix) {
    if (data.size() < prefix.size()) {
        return false;
    }
    for (std::size_t i = 0; i < prefix.size(); ++i) {
        const auto a = static_cast<unsigned char>(data[i]);
        const auto b = static_cast<unsigned char>(prefix[i]);
        if (std::tolower(a) != std::tolower(b)) {
            return false;
        }
    }
    return true;
}

// Header values arrive with surrounding blanks and the CRLF; callers want the bare value.
std::string_view trim_blanks(std::string_view s) {
    auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
    while (!s.empty() && blank(s.front())) {
        s.remove_prefix(1);
    }
    while (!s.empty() && blank(s.back())) {
        s.remove_suffix(1);
    }
    return s;
}

}  // namespace

// Reads Retry-After so a rate-limited provider is not asked again before it allows.
std::optional<Micros> parse_retry_after(std::string_view header, Time now) {
    while (!header.empty() && (header.front() == ' ' || header.front() == '\t')) {
        header.remove_prefix(1);
    }
    while (!header.empty() && (header.back() == ' ' || header.back() == '\t')) {
        header.remove_suffix(1);
    }
    if (header.empty() || header.size() > kMaxRetryAfterHeader) {
        return std::nullopt;
    }
    const Micros cap = seconds(kMaxRetryAfterSeconds);

    if (std::all_of(header.begin(), header.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        std::int64_t v = 0;
        for (const char c : header) {
            v = (v * 10) + (c - '0');
            if (v > kMaxRetryAfterSeconds) {
                return cap;
            }
        }
        return seconds(v);
    }

    const auto date_s = parse_http_date(header, now);
    if (!date_s) {
        return std::nullopt;
    }
    const std::int64_t now_us = now.time_since_epoch().count();
    const std::int64_t now_s = now_us / kMicrosPerSecond;
    if (*date_s <= now_s - 1) {
        return Micros{0};
    }
    if (*date_s - now_s > kMaxRetryAfterSeconds) {
        return cap;
    }
    const Micros delta = seconds(*date_s) - Micros{now_us};
    return std::clamp(delta, Micros{0}, cap);
}

// Keeps the Retry-After of the final response while libcurl hands over header lines.
void track_retry_after(std::string_view line, std::string& retry_after) {
    static constexpr std::string_view kRetryAfter = "retry-after:";
    if (starts_with_ci(line, "HTTP/")) {
        retry_after.clear();
    } else if (starts_with_ci(line, kRetryAfter)) {
        std::string_view value = trim_blanks(line.substr(kRetryAfter.size()));
        if (value.size() > kMaxRetryAfterHeaderLine) {
            value = value.substr(0, kMaxRetryAfterHeaderLine);
        }
        retry_after.assign(value.data(), value.size());
    }
}

}  // namespace upstream_token
