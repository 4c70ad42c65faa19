// Removing the secrets a request carried from anything a provider said back: providers may
// quote what they received in error texts, and those texts reach logs and token_status.
#pragma once

#include <string>
#include <vector>

namespace upstream_token {

// Replaces every occurrence of each secret (as sent raw, form-encoded and base64-encoded
// inside Basic credentials) with "[redacted]". Secrets shorter than 4 bytes are ignored.
std::string redact_secrets(std::string text, const std::vector<std::string>& secrets);

}  // namespace upstream_token
