// Sealing and opening one secret column of one row: the AAD names its place, so a
// ciphertext moved to another row or column does not open.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace upstream_token::pg {

// Encrypts `plain` for (provider, session, column) under the current key.
std::string seal(std::string_view provider, std::string_view session, std::string_view column,
                 std::string_view plain);

// Decrypts a stored ciphertext; nullopt in, nullopt out.
std::optional<std::string> open_sealed(std::string_view provider, std::string_view session,
                                       std::string_view column,
                                       const std::optional<std::string>& sealed);

}  // namespace upstream_token::pg
