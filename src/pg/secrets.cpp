#include "pg/secrets.hpp"

#include <algorithm>
#include <cstdio>

#include "core/crypto.hpp"
#include "core/error.hpp"
#include "pg/keys.hpp"

namespace upstream_token::pg {

namespace {

// A key id as current_key_id() and key_usage show it.
std::string hex_id(std::uint32_t id) {
    char hex[9];
    std::snprintf(hex, sizeof hex, "%08x", id);
    return hex;
}

// Whether a key with this id is in hand.
bool has_key(const std::vector<Key>& keys, std::uint32_t id) {
    return std::any_of(keys.begin(), keys.end(), [id](const Key& k) { return k.id == id; });
}

// The keys that can open a ciphertext naming `id`: when the keys in hand lack it, the key files
// are checked at once (one may just have changed); a key still missing is a clear error that
// names it (a key id reveals nothing about the key).
const std::vector<Key>& keys_for(std::uint32_t id, std::string_view provider,
                                 std::string_view column) {
    const std::vector<Key>& keys = known_keys();
    if (has_key(keys, id)) return keys;
    const std::vector<Key>& now = known_keys_checked_now();
    if (has_key(now, id)) return now;
    std::string detail = "The value names key " + hex_id(id) +
                         "; upstream_token.key_file holds key " + hex_id(now.front().id);
    detail += now.size() > 1 ? ", upstream_token.previous_key_file key " + hex_id(now[1].id)
                             : ", and upstream_token.previous_key_file is not set";
    throw Error(ErrorCode::decryption_failed,
                "stored " + std::string(column) + " of provider \"" + std::string(provider) +
                    "\" is sealed under a key that is not configured",
                detail + ".",
                "Point upstream_token.previous_key_file at the file of key " + hex_id(id) +
                    " and reload, until CALL upstream_token.rotate_key() has re-sealed "
                    "everything under the current key.");
}

}  // namespace

std::string seal(std::string_view provider, std::string_view session, std::string_view column,
                 std::string_view plain) {
    return encrypt_secret(current_key(), plain, secret_aad(provider, session, column));
}

std::optional<std::string> open_sealed(std::string_view provider, std::string_view session,
                                       std::string_view column,
                                       const std::optional<std::string>& sealed) {
    if (!sealed) return std::nullopt;
    const auto unreadable = [&] {
        return Error(ErrorCode::decryption_failed,
                     "stored " + std::string(column) + " of provider \"" + std::string(provider) +
                         "\" could not be decrypted",
                     "The ciphertext does not belong to this row and column, was altered, or was "
                     "written under a key this server does not have.");
    };
    std::uint32_t id = 0;
    try {
        id = ciphertext_key_id(*sealed);
    } catch (const Error& e) {
        if (e.code() != ErrorCode::decryption_failed) throw;
        throw unreadable();
    }
    const std::vector<Key>& keys = keys_for(id, provider, column);
    try {
        return decrypt_secret(keys, *sealed, secret_aad(provider, session, column));
    } catch (const Error& e) {
        if (e.code() != ErrorCode::decryption_failed) throw;
        throw unreadable();
    }
}

}  // namespace upstream_token::pg
