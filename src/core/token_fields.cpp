// Lenient reading of a successful token answer's fields (see token_fields.hpp). Warnings
// name the field and its JSON type or problem, never its value: a value may be a secret.
#include "core/token_fields.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string_view>
#include <vector>

#include "core/json_repair.hpp"

namespace upstream_token {

namespace {

using nlohmann::json;

constexpr auto kMaxSeconds = std::numeric_limits<std::int64_t>::max();
constexpr std::size_t kMaxNumericString = 64;  // longer strings are not read as numbers

// "a boolean", "an array", ...: the JSON type of a value, for warnings.
std::string a_type(const json& v) {
    const std::string name = v.type_name();
    const bool vowel =
        !name.empty() && std::string_view("aeiou").find(name[0]) != std::string_view::npos;
    return (vowel ? "an " : "a ") + name;
}

// Collects the warnings of one answer.
class Warnings {
  public:
    // Starts collecting into `out`.
    explicit Warnings(std::vector<std::string>& out) : out_(out) {}

    // Records "<field> is <problem>; <consequence>".
    void add(const char* field, const std::string& problem, const char* consequence) {
        out_.push_back(std::string(field) + " is " + problem + "; " + consequence);
    }

  private:
    std::vector<std::string>& out_;
};

// Whether a token string was damaged by json_repair (tokens are ASCII: no U+FFFD in them).
bool damaged(const std::string& s, bool repaired) {
    return repaired && s.find(kReplacementCharacter) != std::string::npos;
}

// Reads an optional string member; null and "" count as absent. Anything else that is not
// a usable string is ignored with a warning naming `consequence`.
std::optional<std::string> optional_string(const json& obj, const char* name, bool repaired,
                                           Warnings& w, const char* consequence) {
    const auto it = obj.find(name);
    if (it == obj.end() || it->is_null()) {
        return std::nullopt;
    }
    if (!it->is_string()) {
        w.add(name, a_type(*it), consequence);
        return std::nullopt;
    }
    const auto& value = it->get_ref<const std::string&>();
    if (value.empty()) {
        return std::nullopt;
    }
    if (damaged(value, repaired)) {
        w.add(name, "not valid UTF-8", consequence);
        return std::nullopt;
    }
    return value;
}

// Seconds from a JSON number: fractions are cut, huge values capped (with a warning),
// negative ones ignored (with a warning).
std::optional<std::int64_t> seconds_of_number(const json& v, const char* name, Warnings& w) {
    if (v.is_number_unsigned()) {
        const auto u = v.get<std::uint64_t>();
        if (u > static_cast<std::uint64_t>(kMaxSeconds)) {
            w.add(name, "too large", "capped");
            return kMaxSeconds;
        }
        return static_cast<std::int64_t>(u);
    }
    if (v.is_number_integer()) {
        const auto i = v.get<std::int64_t>();
        if (i < 0) {
            w.add(name, "negative", "default used");
            return std::nullopt;
        }
        return i;
    }
    const auto d = v.get<double>();
    if (std::isnan(d)) {
        w.add(name, "not a number", "default used");
        return std::nullopt;
    }
    if (d < 0) {
        w.add(name, "negative", "default used");
        return std::nullopt;
    }
    // 2^63 as a double; anything at or above it (1e308 from json_repair too) is capped.
    if (d >= 9223372036854775808.0) {
        w.add(name, "too large", "capped");
        return kMaxSeconds;
    }
    return static_cast<std::int64_t>(std::floor(d));
}

// Reads a lifetime in seconds: a JSON number, or a string holding one ("3600", "3600.0",
// " 3.6e3 "). Anything else (empty, garbage, boolean, array, negative) is ignored with a
// warning, so the default lifetime applies.
std::optional<std::int64_t> optional_seconds(const json& obj, const char* name, Warnings& w) {
    const auto it = obj.find(name);
    if (it == obj.end() || it->is_null()) {
        return std::nullopt;
    }
    if (it->is_number()) {
        return seconds_of_number(*it, name, w);
    }
    if (!it->is_string()) {
        w.add(name, a_type(*it), "default used");
        return std::nullopt;
    }
    const auto& s = it->get_ref<const std::string&>();
    if (s.empty()) {
        w.add(name, "an empty string", "default used");
        return std::nullopt;
    }
    json number;
    if (s.size() <= kMaxNumericString) {
        number = json::parse(s, nullptr, false);
        if (number.is_discarded()) {  // too large for a double, perhaps
            if (const auto fixed = repair_json_text(s)) {
                number = json::parse(*fixed, nullptr, false);
            }
        }
    }
    if (!number.is_number()) {
        w.add(name, "a string that is not a number", "default used");
        return std::nullopt;
    }
    return seconds_of_number(number, name, w);
}

// Reads scope: a space-separated string (RFC 6749 3.3), or leniently an array of strings.
// Anything else is ignored with a warning (the stored scope is kept).
std::optional<std::string> optional_scope(const json& obj, Warnings& w) {
    const auto it = obj.find("scope");
    if (it == obj.end() || it->is_null()) {
        return std::nullopt;
    }
    if (it->is_string()) {
        return it->get<std::string>();
    }
    if (!it->is_array()) {
        w.add("scope", a_type(*it), "ignored");
        return std::nullopt;
    }
    std::string joined;
    for (const auto& item : *it) {
        if (!item.is_string()) {
            w.add("scope", "an array with " + a_type(item) + " in it", "ignored");
            return std::nullopt;
        }
        if (!joined.empty()) {
            joined.push_back(' ');
        }
        joined += item.get_ref<const std::string&>();
    }
    return joined;
}

// Top-level fields other than the tokens and their lifetimes, as text, bounded in number and
// size (a provider may answer with anything next to its tokens).
void read_other_fields(const json& obj, bool repaired, std::map<std::string, std::string>& out) {
    for (const auto& [name, value] : obj.items()) {
        if (out.size() >= kMaxOtherFields) return;
        if (is_token_field(name) || name.size() > 64) continue;
        std::string text;
        if (value.is_string()) {
            text = value.get_ref<const std::string&>();
            if (damaged(text, repaired)) continue;
        } else if (value.is_number()) {
            text = value.dump();
        } else {
            continue;
        }
        if (text.size() <= kMaxOtherFieldBytes) out.emplace(name, std::move(text));
    }
}

}  // namespace

bool is_token_field(std::string_view name) {
    static constexpr std::string_view kFields[] = {
        "access_token", "refresh_token", "id_token",           "token_type",
        "scope",        "expires_in",    "refresh_expires_in", "refresh_token_expires_in"};
    return std::any_of(std::begin(kFields), std::end(kFields),
                       [name](std::string_view f) { return f == name; });
}

// Reads what a successful answer carries; only a missing or unusable access_token fails it.

TokenFields read_token_fields(const json& obj, bool repaired) {
    TokenFields r;
    const auto at = obj.find("access_token");
    if (at == obj.end() || at->is_null()) {
        r.problem = "token response has no access_token";
        return r;
    }
    if (!at->is_string()) {
        r.problem = "token response field access_token is " + a_type(*at);
        return r;
    }
    const auto& access = at->get_ref<const std::string&>();
    if (access.empty()) {
        r.problem = "token response has an empty access_token";
        return r;
    }
    if (damaged(access, repaired)) {
        r.problem = "token response field access_token is not valid UTF-8";
        return r;
    }
    TokenResponse t;
    Warnings w(t.warnings);
    if (repaired) {
        t.warnings.emplace_back("body repaired (invalid UTF-8 or a number out of range)");
    }
    t.access_token = access;
    t.refresh_token = optional_string(obj, "refresh_token", repaired, w, "ignored");
    t.id_token = optional_string(obj, "id_token", repaired, w, "ignored");
    t.token_type = optional_string(obj, "token_type", false, w, "Bearer used").value_or("Bearer");
    t.scope = optional_scope(obj, w);
    t.expires_in = optional_seconds(obj, "expires_in", w);
    t.refresh_expires_in = optional_seconds(obj, "refresh_expires_in", w);
    if (!t.refresh_expires_in) {
        t.refresh_expires_in = optional_seconds(obj, "refresh_token_expires_in", w);
    }
    read_other_fields(obj, repaired, t.other_fields);
    r.tokens = std::move(t);
    return r;
}

}  // namespace upstream_token
