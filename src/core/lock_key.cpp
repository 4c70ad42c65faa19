#include "core/lock_key.hpp"

#include <openssl/evp.h>

#include <array>
#include <string>

#include "core/error.hpp"

namespace upstream_token {

namespace {
// Folds bytes into an FNV-1a state.
std::uint64_t fnv1a(std::uint64_t h, std::string_view bytes) {
    for (const char c : bytes) {
        h ^= static_cast<unsigned char>(c);
        h *= 1099511628211ULL;
    }
    return h;
}

// Appends a field as its 4-byte big-endian length and its bytes: no two (provider, session)
// pairs share an encoding.
void append_field(std::string& out, std::string_view field) {
    const auto n = static_cast<std::uint32_t>(field.size());
    for (int shift = 24; shift >= 0; shift -= 8) {
        out.push_back(static_cast<char>((n >> static_cast<unsigned>(shift)) & 0xFFU));
    }
    out.append(field);
}
}  // namespace

std::int64_t token_lock_key(std::string_view provider, std::string_view session) {
    std::string input;
    input.reserve(8 + provider.size() + session.size());
    append_field(input, provider);
    append_field(input, session);
    std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
    unsigned int len = 0;
    if (EVP_Digest(input.data(), input.size(), digest.data(), &len, EVP_sha256(), nullptr) != 1 ||
        len < 8) {
        throw Error(ErrorCode::internal, "SHA-256 failed while computing a token lock key");
    }
    std::uint64_t key = 0;
    for (std::size_t i = 0; i < 8; ++i) key = (key << 8U) | digest.at(i);
    return static_cast<std::int64_t>(key);
}

std::int64_t stable_token_hash(std::string_view provider, std::string_view session) {
    std::uint64_t h = 14695981039346656037ULL;
    h = fnv1a(h, provider);
    h = fnv1a(h, std::string_view("\0", 1));
    h = fnv1a(h, session);
    return static_cast<std::int64_t>(h);
}

}  // namespace upstream_token
