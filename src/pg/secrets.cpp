#include "pg/secrets.hpp"

#include "core/crypto.hpp"
#include "core/error.hpp"
#include "pg/keys.hpp"

namespace upstream_token::pg {

std::string seal(std::string_view provider, std::string_view session, std::string_view column,
                 std::string_view plain) {
    return encrypt_secret(current_key(), plain, secret_aad(provider, session, column));
}

std::optional<std::string> open_sealed(std::string_view provider, std::string_view session,
                                       std::string_view column,
                                       const std::optional<std::string>& sealed) {
    if (!sealed) return std::nullopt;
    try {
        return decrypt_secret(known_keys(), *sealed, secret_aad(provider, session, column));
    } catch (const Error& e) {
        if (e.code() != ErrorCode::decryption_failed) throw;
        throw Error(ErrorCode::decryption_failed,
                    "stored " + std::string(column) + " of provider \"" + std::string(provider) +
                        "\" could not be decrypted",
                    "The ciphertext does not belong to this row and column, was altered, or was "
                    "written under a key this server does not have.");
    }
}

}  // namespace upstream_token::pg
