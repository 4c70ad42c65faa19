// The read path of every token the extension hands out: the row read with the transaction's
// snapshot (no lock, no write), and the engine asked only when the token is due.
#pragma once

#include <optional>
#include <string>

#include "core/grant_params.hpp"
#include "core/time.hpp"

namespace upstream_token::pg {

// A token handed to the caller.
struct Obtained {
    std::string access;
    std::optional<std::string> id_token;
    Time expires_at{};
};

// A valid access token for (session, provider): the stored one when fresh, else what the
// engine renewed. `grant` marks a grant's token (client credentials, exchange): renewed by its
// grant, and obtained for the first time when no row exists. Needs an SPI connection.
Obtained obtain(const std::string& session, const std::string& provider, bool with_id_token,
                const GrantParams* grant = nullptr);

// The error for a missing row: unknown provider, a login under way, or no token.
[[noreturn]] void throw_not_found(const std::string& provider,
                                  const std::optional<std::string>& session = std::nullopt);

}  // namespace upstream_token::pg
