// Secret encryption: AES-256-GCM with a per-value random nonce, a key id and a format
// version in every ciphertext, and AAD that binds the value to (provider, session, column).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace upstream_token {

struct KeyedCiphers;

struct Key {
    std::uint32_t id = 0;  // derived from the key bytes, see key_id_of
    std::array<unsigned char, 32> bytes{};
    // Cipher contexts already keyed with `bytes`, made on first use and shared by copies: a
    // key and its copies are for one thread at a time (each PostgreSQL process is one).
    mutable std::shared_ptr<KeyedCiphers> ciphers;
};

// Parses a key file's text: exactly 64 hex characters, optionally followed by "\n" or "\r\n".
// Throws Error(key_unavailable) naming what is wrong (never echoing the content).
Key parse_key_text(std::string_view text);

// Stable 32-bit identifier of a key: the first 4 bytes (big endian) of
// SHA-256("upstream_token key id" || key bytes).
std::uint32_t key_id_of(const std::array<unsigned char, 32>& bytes);

// The associated data that ties a ciphertext to its place.
std::string secret_aad(std::string_view provider, std::string_view session,
                       std::string_view column);

// Ciphertext layout (binary): version byte 0x01 | key id (4 bytes, big endian) |
// nonce (12 bytes) | AES-256-GCM ciphertext | tag (16 bytes).
std::string encrypt_secret(const Key& key, std::string_view plaintext, std::string_view aad);

// Key id recorded in a ciphertext; Error(decryption_failed) when the blob is malformed.
std::uint32_t ciphertext_key_id(std::string_view blob);

// Opens a ciphertext with whichever key in `keys` matches its key id.
// Error(decryption_failed) on a malformed blob, unknown key id, or failed authentication.
std::string decrypt_secret(const std::vector<Key>& keys, std::string_view blob,
                           std::string_view aad);

// Lower-case hex of SHA-256(bytes): digests that name a value without revealing it.
std::string sha256_hex(std::string_view bytes);

// Standard base64 (with padding) of arbitrary bytes, and back: the compact form of a sealed
// value in a bounded text field. Error(invalid_parameter) for text that is not base64.
std::string base64_pack(std::string_view bytes);
std::string base64_unpack(std::string_view text);

// Lower-case hex of arbitrary bytes.
std::string hex_encode(std::string_view bytes);

}  // namespace upstream_token
