#include "core/redact.hpp"

#include "core/refresh_request.hpp"

namespace upstream_token {

namespace {
// Replaces all occurrences of `needle` in `text`.
void replace_all(std::string& text, const std::string& needle) {
    if (needle.empty()) return;
    static const std::string kMark = "[redacted]";
    for (std::size_t pos = text.find(needle); pos != std::string::npos;
         pos = text.find(needle, pos + kMark.size())) {
        text.replace(pos, needle.size(), kMark);
    }
}
}  // namespace

std::string redact_secrets(std::string text, const std::vector<std::string>& secrets) {
    for (const std::string& s : secrets) {
        if (s.size() < 4) continue;
        replace_all(text, s);
        replace_all(text, form_encode(s));
        replace_all(text, base64_encode(s));
    }
    return text;
}

}  // namespace upstream_token
