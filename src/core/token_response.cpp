// Interpreting a token endpoint's answer (see token_response.hpp).
//
// Nothing from the response body reaches a message except the OAuth "error" code and a
// sanitised, length-limited, token-redacted error_description: a body may echo a token.
#include "core/token_response.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>

#include "core/error.hpp"

namespace upstream_token {

namespace {

using nlohmann::json;

constexpr std::size_t kMaxDescription = 200;
constexpr std::size_t kMaxErrorCode = 64;
constexpr std::size_t kMaxRetryAfterHeader = 256;
constexpr std::int64_t kMaxRetryAfterSeconds = 86400;  // one day
constexpr std::int64_t kMicrosPerSecond = 1000000;

// A run of characters that may form a token (base64url, base64, JWT, opaque).
bool is_token_char(char c) noexcept {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~' || c == '+' || c == '/' || c == '=';
}

// Whether a word of provider text looks like a credential rather than prose: long, and
// either containing a digit or very long. Prose like "refresh_token_expired" survives.
bool looks_like_secret(std::string_view word) noexcept {
    if (word.size() >= 40) {
        return true;
    }
    return word.size() >= 20 &&
           std::any_of(word.begin(), word.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Makes provider-supplied text safe for messages and logs: printable ASCII only, words that
// look like tokens redacted, and at most `cap` characters.
std::string sanitize(std::string_view in, std::size_t cap) {
    std::string printable;
    printable.reserve(std::min(in.size(), cap * 4));
    for (const char c : in) {
        const auto b = static_cast<unsigned char>(c);
        if (b < 0x20U || b == 0x7FU) {
            if (!printable.empty() && printable.back() != ' ') {
                printable.push_back(' ');
            }
        } else if (b >= 0x80U) {
            printable.push_back('?');  // never split a UTF-8 sequence when truncating
        } else {
            printable.push_back(c);
        }
        if (printable.size() > cap * 4) {
            // Plenty to fill the cap. Drop the word cut at the limit: a truncated token
            // could be too short to be recognised and redacted below.
            while (!printable.empty() && is_token_char(printable.back())) {
                printable.pop_back();
            }
            break;
        }
    }

    std::string out;
    std::size_t i = 0;
    while (i < printable.size()) {
        if (!is_token_char(printable[i])) {
            out.push_back(printable[i]);
            ++i;
            continue;
        }
        std::size_t j = i;
        while (j < printable.size() && is_token_char(printable[j])) {
            ++j;
        }
        const std::string_view word(&printable[i], j - i);
        if (looks_like_secret(word)) {
            out += "[redacted]";
        } else {
            out.append(word);
        }
        i = j;
    }
    while (!out.empty() && out.back() == ' ') {
        out.pop_back();
    }
    if (out.size() > cap) {
        out.resize(cap);
        out += "...";
    }
    return out;
}

// The protocol-failure outcome for an unusable answer.
ExchangeOutcome protocol_failure(std::string error, std::string message) {
    ExchangeOutcome o;
    o.failure = FailureClass::protocol;
    o.error = std::move(error);
    o.message = std::move(message);
    return o;
}

// Thrown inside success parsing; carries only a field name and a fixed reason.
struct BadField {
    std::string message;
};

// Reads an optional string member; null and (when empty_is_absent) "" count as absent.
std::optional<std::string> optional_string(const json& obj, const char* name,
                                           bool empty_is_absent) {
    const auto it = obj.find(name);
    if (it == obj.end() || it->is_null()) {
        return std::nullopt;
    }
    if (!it->is_string()) {
        throw BadField{std::string("token response field ") + name + " is not a string"};
    }
    auto value = it->get<std::string>();
    if (empty_is_absent && value.empty()) {
        return std::nullopt;
    }
    return value;
}

// Reads a lifetime in seconds: a JSON number or a string of digits, never negative.
std::optional<std::int64_t> optional_seconds(const json& obj, const char* name) {
    const auto it = obj.find(name);
    if (it == obj.end() || it->is_null()) {
        return std::nullopt;
    }
    constexpr auto kMax = std::numeric_limits<std::int64_t>::max();
    const std::string bad = std::string("token response field ") + name;
    if (it->is_number_unsigned()) {
        const auto v = it->get<std::uint64_t>();
        return v > static_cast<std::uint64_t>(kMax) ? kMax : static_cast<std::int64_t>(v);
    }
    if (it->is_number_integer()) {
        const auto v = it->get<std::int64_t>();
        if (v < 0) {
            throw BadField{bad + " is negative"};
        }
        return v;
    }
    if (it->is_number_float()) {
        const auto v = it->get<double>();
        if (!std::isfinite(v) || v < 0) {
            throw BadField{bad + " is negative or not finite"};
        }
        // 2^63 as a double; anything at or above it saturates.
        if (v >= 9223372036854775808.0) {
            return kMax;
        }
        return static_cast<std::int64_t>(std::floor(v));
    }
    if (it->is_string()) {
        const auto& s = it->get_ref<const std::string&>();
        if (s.empty() ||
            !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
            throw BadField{bad + " is not a non-negative integer"};
        }
        std::int64_t v = 0;
        for (const char c : s) {
            const int d = c - '0';
            if (v > (kMax - d) / 10) {
                return kMax;
            }
            v = (v * 10) + d;
        }
        return v;
    }
    throw BadField{bad + " is not a number"};
}

// Reads scope: a space-separated string per RFC 6749, or (leniently) an array of strings.
std::optional<std::string> optional_scope(const json& obj) {
    const auto it = obj.find("scope");
    if (it == obj.end() || it->is_null()) {
        return std::nullopt;
    }
    if (it->is_string()) {
        return it->get<std::string>();
    }
    if (it->is_array()) {
        std::string joined;
        for (const auto& item : *it) {
            if (!item.is_string()) {
                throw BadField{"token response field scope is not a string"};
            }
            if (!joined.empty()) {
                joined.push_back(' ');
            }
            joined += item.get_ref<const std::string&>();
        }
        return joined;
    }
    throw BadField{"token response field scope is not a string"};
}

// Builds the TokenResponse of a successful answer, or throws BadField.
TokenResponse read_tokens(const json& obj) {
    TokenResponse t;
    const auto at = obj.find("access_token");
    if (at == obj.end() || at->is_null()) {
        throw BadField{"token response has no access_token"};
    }
    if (!at->is_string()) {
        throw BadField{"token response field access_token is not a string"};
    }
    t.access_token = at->get<std::string>();
    if (t.access_token.empty()) {
        throw BadField{"token response has an empty access_token"};
    }
    t.refresh_token = optional_string(obj, "refresh_token", true);
    t.id_token = optional_string(obj, "id_token", true);
    t.token_type = optional_string(obj, "token_type", true).value_or("Bearer");
    t.scope = optional_scope(obj);
    t.expires_in = optional_seconds(obj, "expires_in");
    t.refresh_expires_in = optional_seconds(obj, "refresh_expires_in");
    if (!t.refresh_expires_in) {
        t.refresh_expires_in = optional_seconds(obj, "refresh_token_expires_in");
    }
    return t;
}

// The OAuth error code and description of an error body, when it has them.
struct OAuthError {
    std::string code;         // sanitised, empty when absent
    std::string description;  // sanitised, empty when absent
};

// Extracts "error" / "error_description" from a parsed body without trusting their content.
OAuthError read_oauth_error(const json& body) {
    OAuthError e;
    if (!body.is_object()) {
        return e;
    }
    const auto code = body.find("error");
    if (code != body.end() && code->is_string()) {
        e.code = sanitize(code->get_ref<const std::string&>(), kMaxErrorCode);
    }
    const auto desc = body.find("error_description");
    if (desc != body.end() && desc->is_string()) {
        e.description = sanitize(desc->get_ref<const std::string&>(), kMaxDescription);
    }
    return e;
}

// Human text for a failed exchange: the status, the OAuth error and its description.
std::string describe(long status, const OAuthError& e, std::string_view fallback) {
    std::string m = "token endpoint answered HTTP " + std::to_string(status);
    if (!e.code.empty()) {
        m += " with error \"" + e.code + "\"";
        if (!e.description.empty()) {
            m += ": " + e.description;
        }
    } else if (!fallback.empty()) {
        m += " (";
        m += fallback;
        m += ")";
    }
    return m;
}

// Statuses worth retrying: request timeout, too early, too many requests, server errors.
bool is_transient_status(long status) noexcept {
    return status == 408 || status == 425 || status == 429 || (status >= 500 && status <= 599);
}

// OAuth error codes that say "try again later" whatever the status they come with.
bool is_transient_error_code(std::string_view code) noexcept {
    return code == "temporarily_unavailable" || code == "server_error";
}

// Maps an OAuth error (from a 400/401, or a 2xx without tokens) to its failure class.
FailureClass classify_oauth_error(std::string_view code) noexcept {
    if (code == "invalid_grant") {
        return FailureClass::reauth_required;
    }
    if (code == "invalid_client" || code == "unauthorized_client") {
        return FailureClass::client_misconfigured;
    }
    if (is_transient_error_code(code)) {
        return FailureClass::transient;
    }
    return FailureClass::protocol;
}

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

}  // namespace

// Turns one HTTP answer of the token endpoint into tokens or a failure class the engine acts on.
ExchangeOutcome interpret_token_response(long http_status, std::string_view body,
                                         std::string_view retry_after_header, Time now) {
    const json parsed = json::parse(body.begin(), body.end(), nullptr, false);
    const bool is_object = !parsed.is_discarded() && parsed.is_object();

    if (http_status >= 200 && http_status <= 299) {
        if (!is_object) {
            return protocol_failure("invalid_response", "token endpoint answered HTTP " +
                                                            std::to_string(http_status) +
                                                            " but the body is not a JSON object");
        }
        // Some providers (GitHub) report errors with a 2xx; only when no token came with it.
        if (!parsed.contains("access_token")) {
            const OAuthError e = read_oauth_error(parsed);
            if (!e.code.empty()) {
                ExchangeOutcome o;
                o.failure = classify_oauth_error(e.code);
                o.error = e.code;
                o.message = describe(http_status, e, {});
                if (o.failure == FailureClass::transient) {
                    o.retry_after = parse_retry_after(retry_after_header, now);
                }
                return o;
            }
        }
        try {
            ExchangeOutcome o;
            o.tokens = read_tokens(parsed);
            return o;
        } catch (const BadField& bad) {
            return protocol_failure("invalid_response", bad.message);
        }
    }

    const OAuthError e = is_object ? read_oauth_error(parsed) : OAuthError{};
    ExchangeOutcome o;
    o.error = e.code.empty() ? "http_" + std::to_string(http_status) : e.code;

    if (is_transient_status(http_status) ||
        (http_status >= 400 && http_status <= 499 && is_transient_error_code(e.code))) {
        o.failure = FailureClass::transient;
        o.retry_after = parse_retry_after(retry_after_header, now);
        o.message = describe(http_status, e, "temporary failure, will retry");
        return o;
    }
    if ((http_status == 400 || http_status == 401) && !e.code.empty()) {
        o.failure = classify_oauth_error(e.code);
        o.message = describe(http_status, e, {});
        return o;
    }
    o.failure = FailureClass::protocol;
    if (http_status >= 300 && http_status <= 399) {
        o.message = describe(http_status, e, "redirects are not followed");
    } else {
        o.message = describe(
            http_status, e, is_object ? "no OAuth error in the body" : "body is not a JSON object");
    }
    return o;
}

// Turns a failure below HTTP (DNS, connect, TLS, timeout) into a retryable outcome.
ExchangeOutcome transport_failure(std::string_view what) {
    ExchangeOutcome o;
    o.failure = FailureClass::transient;
    o.error = "transport";
    o.message = "provider unreachable: " + sanitize(what, kMaxDescription);
    return o;
}

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

}  // namespace upstream_token
