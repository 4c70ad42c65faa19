// Lexical repair of JSON texts (see json_repair.hpp). One pass, no recursion: strings are
// copied with their escapes untouched, number literals are checked for overflow, every other
// byte is copied as is.
#include "core/json_repair.hpp"

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <system_error>

namespace upstream_token {

namespace {

constexpr int kMaxDecimalExponent = 308;       // DBL_MAX is about 1.8e308
constexpr std::int64_t kExponentCap = 100000;  // far beyond any double, no overflow

// Whether c is an ASCII digit.
bool is_digit(char c) noexcept {
    return c >= '0' && c <= '9';
}

// Length of the well-formed UTF-8 sequence (RFC 3629) starting at s[i], 0 when ill-formed.
std::size_t utf8_length(std::string_view s, std::size_t i) noexcept {
    const auto b0 = static_cast<unsigned char>(s[i]);
    auto in = [&](std::size_t k, unsigned lo, unsigned hi) {
        if (i + k >= s.size()) {
            return false;
        }
        const auto b = static_cast<unsigned char>(s[i + k]);
        return b >= lo && b <= hi;
    };
    if (b0 >= 0xC2U && b0 <= 0xDFU) {
        return in(1, 0x80U, 0xBFU) ? 2 : 0;
    }
    if (b0 >= 0xE0U && b0 <= 0xEFU) {
        const unsigned lo = b0 == 0xE0U ? 0xA0U : 0x80U;
        const unsigned hi = b0 == 0xEDU ? 0x9FU : 0xBFU;
        return in(1, lo, hi) && in(2, 0x80U, 0xBFU) ? 3 : 0;
    }
    if (b0 >= 0xF0U && b0 <= 0xF4U) {
        const unsigned lo = b0 == 0xF0U ? 0x90U : 0x80U;
        const unsigned hi = b0 == 0xF4U ? 0x8FU : 0xBFU;
        return in(1, lo, hi) && in(2, 0x80U, 0xBFU) && in(3, 0x80U, 0xBFU) ? 4 : 0;
    }
    return 0;
}

// Whether a JSON number literal is too large for a double (a strict parser rejects it).
// Literals that are not JSON numbers count as not overflowing: they are left alone.
bool overflows_double(std::string_view lit) noexcept {
    std::size_t i = 0;
    if (i < lit.size() && lit[i] == '-') {
        ++i;
    }
    // Position of the first significant digit, counted over integer and fraction digits.
    std::int64_t digits_seen = 0;
    std::int64_t first_nonzero = -1;
    std::int64_t int_digits = 0;
    const std::size_t int_start = i;
    while (i < lit.size() && is_digit(lit[i])) {
        if (first_nonzero < 0 && lit[i] != '0') {
            first_nonzero = digits_seen;
        }
        ++digits_seen;
        ++i;
    }
    int_digits = static_cast<std::int64_t>(i - int_start);
    if (int_digits == 0 || (int_digits > 1 && lit[int_start] == '0')) {
        return false;  // JSON wants digits, without leading zeros
    }
    if (i < lit.size() && lit[i] == '.') {
        ++i;
        const std::size_t frac_start = i;
        while (i < lit.size() && is_digit(lit[i])) {
            if (first_nonzero < 0 && lit[i] != '0') {
                first_nonzero = digits_seen;
            }
            ++digits_seen;
            ++i;
        }
        if (i == frac_start) {
            return false;
        }
    }
    std::int64_t exponent = 0;
    if (i < lit.size() && (lit[i] == 'e' || lit[i] == 'E')) {
        ++i;
        bool negative = false;
        if (i < lit.size() && (lit[i] == '+' || lit[i] == '-')) {
            negative = lit[i] == '-';
            ++i;
        }
        const std::size_t exp_start = i;
        while (i < lit.size() && is_digit(lit[i])) {
            if (exponent < kExponentCap) {
                exponent = (exponent * 10) + (lit[i] - '0');
            }
            ++i;
        }
        if (i == exp_start) {
            return false;
        }
        exponent = negative ? -exponent : exponent;
    }
    if (i != lit.size() || first_nonzero < 0) {
        return false;  // trailing garbage, or the value is zero
    }
    // Decimal exponent of the leading significant digit: value = d.ddd x 10^magnitude.
    const std::int64_t magnitude = exponent + (int_digits - 1 - first_nonzero);
    if (magnitude != kMaxDecimalExponent) {
        return magnitude > kMaxDecimalExponent;
    }
    // Right at the edge: let the (locale-independent) library decide.
    double value = 0;
    const auto r = std::from_chars(lit.data(), lit.data() + lit.size(), value);
    return r.ec == std::errc::result_out_of_range;
}

}  // namespace

// Rewrites only what a strict parser would reject for one value's sake; see the header.
std::optional<std::string> repair_json_text(std::string_view text) {
    std::string out;
    out.reserve(text.size() + 16);
    bool changed = false;
    std::size_t i = 0;
    while (i < text.size()) {
        const char c = text[i];
        if (c == '"') {
            out.push_back(c);
            ++i;
            while (i < text.size()) {
                const char s = text[i];
                const auto b = static_cast<unsigned char>(s);
                if (s == '"') {
                    out.push_back(s);
                    ++i;
                    break;
                }
                if (s == '\\') {  // the escape itself is the parser's business
                    out.append(text.substr(i, 2));
                    i += 2;
                    continue;
                }
                if (b < 0x20U) {
                    out.append(kReplacementCharacter);
                    changed = true;
                    ++i;
                    continue;
                }
                if (b < 0x80U) {
                    out.push_back(s);
                    ++i;
                    continue;
                }
                const std::size_t n = utf8_length(text, i);
                if (n == 0) {
                    out.append(kReplacementCharacter);
                    changed = true;
                    ++i;
                    continue;
                }
                out.append(text.substr(i, n));
                i += n;
            }
            continue;
        }
        if (c == '-' || is_digit(c)) {
            std::size_t j = i;
            while (j < text.size() && (is_digit(text[j]) || text[j] == '-' || text[j] == '+' ||
                                       text[j] == '.' || text[j] == 'e' || text[j] == 'E')) {
                ++j;
            }
            const std::string_view lit = text.substr(i, j - i);
            if (overflows_double(lit)) {
                out.append(lit.front() == '-' ? "-1e308" : "1e308");
                changed = true;
            } else {
                out.append(lit);
            }
            i = j;
            continue;
        }
        if (c == '\0') {  // nlohmann::json reads a NUL outside strings as the end of input
            out.append(text.substr(i));
            break;
        }
        out.push_back(c);
        ++i;
    }
    if (!changed) {
        return std::nullopt;
    }
    return out;
}

}  // namespace upstream_token
