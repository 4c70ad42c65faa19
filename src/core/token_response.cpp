// Interpreting a token endpoint's answer (see token_response.hpp).
//
// Nothing from the response body reaches a message except the OAuth "error" code and a
// sanitised, length-limited, token-redacted error_description: a body may echo a token.
#include "core/token_response.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <string>
#include <utility>

#include "core/json_repair.hpp"
#include "core/token_fields.hpp"

namespace upstream_token {

namespace {

using nlohmann::json;

constexpr std::size_t kMaxDescription = 200;
constexpr std::size_t kMaxErrorCode = 64;

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

// The OAuth error code and description of an error body, when it has them.
struct OAuthError {
    std::string code;         // sanitised, empty when absent
    std::string description;  // sanitised, empty when absent
};

// Extracts "error" / "error_description" from a parsed body without trusting their content.
// A body without "error" may carry HubSpot's shape instead: "status" and "message".
OAuthError read_oauth_error(const json& body) {
    OAuthError e;
    if (!body.is_object()) {
        return e;
    }
    auto code = body.find("error");
    const bool oauth_shape = code != body.end();
    if (!oauth_shape) code = body.find("status");
    if (code != body.end() && code->is_string()) {
        e.code = sanitize(code->get_ref<const std::string&>(), kMaxErrorCode);
    }
    const auto desc = body.find(oauth_shape ? "error_description" : "message");
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

// Error codes that mean "the user must sign in again": RFC 6749's invalid_grant, OpenID
// Connect's interaction codes (Microsoft Entra ID answers a refresh with interaction_required)
// and the non-standard ones of providers that say so in an error body (Slack, GitHub Apps,
// HubSpot).
bool is_reauth_error_code(std::string_view code) noexcept {
    return code == "invalid_grant" || code == "interaction_required" || code == "login_required" ||
           code == "consent_required" || code == "invalid_refresh_token" ||
           code == "bad_refresh_token" || code == "BAD_REFRESH_TOKEN";
}

// Maps an OAuth error (from a 400/401/403, or a 2xx without tokens) to its failure class.
FailureClass classify_oauth_error(std::string_view code) noexcept {
    if (is_reauth_error_code(code)) {
        return FailureClass::reauth_required;
    }
    // The client may not use this grant, or the provider has none such: the registration
    // is wrong, retrying will not help.
    if (code == "invalid_client" || code == "unauthorized_client" ||
        code == "unsupported_grant_type") {
        return FailureClass::client_misconfigured;
    }
    if (is_transient_error_code(code)) {
        return FailureClass::transient;
    }
    return FailureClass::protocol;
}

}  // namespace

// Turns one HTTP answer of the token endpoint into tokens or a failure class the engine acts on.
ExchangeOutcome interpret_token_response(long http_status, std::string_view body,
                                         std::string_view retry_after_header, Time now) {
    json parsed = json::parse(body.begin(), body.end(), nullptr, false);
    bool repaired = false;
    if (parsed.is_discarded()) {  // one odd value must not cost the tokens next to it
        if (const auto fixed = repair_json_text(body)) {
            parsed = json::parse(*fixed, nullptr, false);
            repaired = true;
        }
    }
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
        TokenFields fields = read_token_fields(parsed, repaired);
        if (!fields.tokens) {
            return protocol_failure("invalid_response", fields.problem);
        }
        ExchangeOutcome o;
        o.tokens = std::move(fields.tokens);
        return o;
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
    // 403 too: Auth0 and Atlassian answer a dead refresh token with 403 invalid_grant.
    if ((http_status == 400 || http_status == 401 || http_status == 403) && !e.code.empty()) {
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

}  // namespace upstream_token
