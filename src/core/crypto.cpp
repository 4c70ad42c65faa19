// AES-256-GCM secret encryption (see crypto.hpp for the blob layout and the AAD contract).
#include "core/crypto.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <limits>
#include <memory>

#include "core/error.hpp"

namespace upstream_token {

namespace {

constexpr unsigned char kFormatVersion = 0x01;
constexpr std::size_t kKeyIdSize = 4;
constexpr std::size_t kNonceSize = 12;
constexpr std::size_t kTagSize = 16;
constexpr std::size_t kHeaderSize = 1 + kKeyIdSize + kNonceSize;
constexpr std::size_t kMinBlobSize = kHeaderSize + kTagSize;
constexpr std::size_t kKeyHexChars = 64;
// EVP update calls take an int length; larger inputs are fed in chunks of this size.
constexpr std::size_t kMaxChunk = static_cast<std::size_t>(INT_MAX) / 2;

constexpr std::string_view kKeyIdLabel = "upstream_token key id";
constexpr std::string_view kAadLabel = "upstream_token/v1";

struct CipherCtxFree {
    void operator()(EVP_CIPHER_CTX* ctx) const noexcept { EVP_CIPHER_CTX_free(ctx); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree>;

struct MdCtxFree {
    void operator()(EVP_MD_CTX* ctx) const noexcept { EVP_MD_CTX_free(ctx); }
};
using MdCtx = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;

// Overwrites a string's bytes before it goes away, so a failed decryption leaves no plaintext.
void wipe(std::string& s) noexcept {
    if (!s.empty()) {
        OPENSSL_cleanse(s.data(), s.size());
    }
    s.clear();
}

// Allocates a cipher context, turning allocation failure into an internal error.
CipherCtx new_cipher_ctx() {
    CipherCtx ctx(EVP_CIPHER_CTX_new());
    if (!ctx) {
        throw Error(ErrorCode::internal, "could not allocate a cipher context");
    }
    return ctx;
}

}  // namespace

// A key's AES-256-GCM contexts, keyed once: a full initialisation (OpenSSL 3 fetches the
// cipher and expands the key each time) costs four times a short token's whole sealing; a
// use then only sets its nonce, which also resets the context after a failed use.
struct KeyedCiphers {
    explicit KeyedCiphers(const std::array<unsigned char, 32>& b) : bytes(b) {}
    ~KeyedCiphers() { OPENSSL_cleanse(bytes.data(), bytes.size()); }
    KeyedCiphers(const KeyedCiphers&) = delete;
    KeyedCiphers& operator=(const KeyedCiphers&) = delete;

    std::array<unsigned char, 32> bytes;  // what the contexts were keyed with
    CipherCtx encrypt;
    CipherCtx decrypt;
};

namespace {

// The key's context for one direction, keyed on first use; the caller sets the nonce. A copy
// of a key whose bytes were changed since gets contexts of its own.
EVP_CIPHER_CTX* keyed_ctx(const Key& key, bool encrypt) {
    if (!key.ciphers || key.ciphers->bytes != key.bytes) {
        key.ciphers = std::make_shared<KeyedCiphers>(key.bytes);
    }
    CipherCtx& slot = encrypt ? key.ciphers->encrypt : key.ciphers->decrypt;
    if (!slot) {
        CipherCtx ctx = new_cipher_ctx();
        const int enc = encrypt ? 1 : 0;
        if (EVP_CipherInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr, enc) != 1 ||
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(kNonceSize),
                                nullptr) != 1 ||
            EVP_CipherInit_ex(ctx.get(), nullptr, nullptr, key.bytes.data(), nullptr, enc) != 1) {
            throw Error(ErrorCode::internal, "could not initialise AES-256-GCM");
        }
        slot = std::move(ctx);
    }
    return slot.get();
}

// Value of one hex digit, or -1; keeps parse_key_text free of locale-dependent calls.
int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

// Appends a 32-bit value big endian: the one byte order used in blobs and the AAD.
void put_u32_be(std::string& out, std::uint32_t v) {
    out.push_back(static_cast<char>((v >> 24U) & 0xFFU));
    out.push_back(static_cast<char>((v >> 16U) & 0xFFU));
    out.push_back(static_cast<char>((v >> 8U) & 0xFFU));
    out.push_back(static_cast<char>(v & 0xFFU));
}

// Reads the 32-bit big-endian value at `pos` of a blob whose size was already checked.
std::uint32_t get_u32_be(std::string_view s, std::size_t pos) noexcept {
    std::uint32_t v = 0;
    for (std::size_t i = 0; i < kKeyIdSize; ++i) {
        v = (v << 8U) | static_cast<unsigned char>(s[pos + i]);
    }
    return v;
}

// Appends one AAD field with its length in front, which makes the encoding injective.
void put_field(std::string& out, std::string_view field) {
    if (field.size() > std::numeric_limits<std::uint32_t>::max()) {
        throw Error(ErrorCode::invalid_parameter, "associated data field is too long");
    }
    put_u32_be(out, static_cast<std::uint32_t>(field.size()));
    out.append(field);
}

// Feeds AAD into an initialised GCM context (encrypt or decrypt), in int-sized chunks.
void feed_aad(EVP_CIPHER_CTX* ctx, std::string_view aad, bool encrypting) {
    const auto* p = reinterpret_cast<const unsigned char*>(aad.data());
    std::size_t left = aad.size();
    while (left > 0) {
        const std::size_t n = std::min(left, kMaxChunk);
        int outl = 0;
        const int ok = encrypting ? EVP_EncryptUpdate(ctx, nullptr, &outl, p, static_cast<int>(n))
                                  : EVP_DecryptUpdate(ctx, nullptr, &outl, p, static_cast<int>(n));
        if (ok != 1) {
            throw Error(ErrorCode::internal, "AES-GCM rejected the associated data");
        }
        p += n;
        left -= n;
    }
}

// The error every decryption failure becomes: one code, no secret content in the text.
Error decryption_error(const char* what) {
    return {ErrorCode::decryption_failed, std::string("could not decrypt secret: ") + what};
}

}  // namespace

// Turns the key file's text into key bytes, refusing anything but exactly one 256-bit hex key.
Key parse_key_text(std::string_view text) {
    if (text.size() >= 2 && text.substr(text.size() - 2) == "\r\n") {
        text.remove_suffix(2);
    } else if (!text.empty() && text.back() == '\n') {
        text.remove_suffix(1);
    }
    if (text.size() != kKeyHexChars) {
        throw Error(ErrorCode::key_unavailable,
                    "encryption key must be exactly 64 hexadecimal characters, found " +
                        std::to_string(text.size()) + " characters");
    }
    if (!std::all_of(text.begin(), text.end(), [](char c) { return hex_value(c) >= 0; })) {
        throw Error(ErrorCode::key_unavailable,
                    "encryption key contains a character that is not hexadecimal");
    }
    Key key;
    for (std::size_t i = 0; i < key.bytes.size(); ++i) {
        const auto hi = static_cast<unsigned>(hex_value(text[2 * i]));
        const auto lo = static_cast<unsigned>(hex_value(text[(2 * i) + 1]));
        key.bytes.at(i) = static_cast<unsigned char>((hi << 4U) | lo);
    }
    key.id = key_id_of(key.bytes);
    return key;
}

// Names a key without revealing it, so ciphertexts can say which key (of several) opens them.
std::uint32_t key_id_of(const std::array<unsigned char, 32>& bytes) {
    MdCtx md(EVP_MD_CTX_new());
    std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
    unsigned int len = 0;
    if (!md || EVP_DigestInit_ex(md.get(), EVP_sha256(), nullptr) != 1 ||
        EVP_DigestUpdate(md.get(), kKeyIdLabel.data(), kKeyIdLabel.size()) != 1 ||
        EVP_DigestUpdate(md.get(), bytes.data(), bytes.size()) != 1 ||
        EVP_DigestFinal_ex(md.get(), digest.data(), &len) != 1 || len < kKeyIdSize) {
        throw Error(ErrorCode::internal, "SHA-256 failed while computing a key id");
    }
    std::uint32_t id = 0;
    for (std::size_t i = 0; i < kKeyIdSize; ++i) {
        id = (id << 8U) | digest.at(i);
    }
    OPENSSL_cleanse(digest.data(), digest.size());
    return id;
}

// Binds a ciphertext to its row and column so it cannot be moved elsewhere and still open.
std::string secret_aad(std::string_view provider, std::string_view session,
                       std::string_view column) {
    std::string out;
    out.reserve(kAadLabel.size() + 1 + (3 * kKeyIdSize) + provider.size() + session.size() +
                column.size());
    out.append(kAadLabel);
    out.push_back('\0');
    put_field(out, provider);
    put_field(out, session);
    put_field(out, column);
    return out;
}

// Seals one secret for storage: fresh random nonce, key id and version in front, tag behind.
std::string encrypt_secret(const Key& key, std::string_view plaintext, std::string_view aad) {
    if (key.id != key_id_of(key.bytes)) {
        throw Error(ErrorCode::internal, "encryption key id does not match the key");
    }
    std::array<unsigned char, kNonceSize> nonce{};
    if (RAND_bytes(nonce.data(), static_cast<int>(nonce.size())) != 1) {
        throw Error(ErrorCode::internal, "could not generate a random nonce");
    }

    EVP_CIPHER_CTX* ctx = keyed_ctx(key, true);
    if (EVP_EncryptInit_ex(ctx, nullptr, nullptr, nullptr, nonce.data()) != 1) {
        throw Error(ErrorCode::internal, "could not initialise AES-256-GCM");
    }
    feed_aad(ctx, aad, true);

    std::string blob;
    blob.reserve(kMinBlobSize + plaintext.size());
    blob.push_back(static_cast<char>(kFormatVersion));
    put_u32_be(blob, key.id);
    blob.append(reinterpret_cast<const char*>(nonce.data()), nonce.size());

    // GCM is a stream mode: the ciphertext is exactly as long as the plaintext.
    blob.resize(kHeaderSize + plaintext.size());
    auto* out = reinterpret_cast<unsigned char*>(blob.data()) + kHeaderSize;
    const auto* in = reinterpret_cast<const unsigned char*>(plaintext.data());
    std::size_t left = plaintext.size();
    while (left > 0) {
        const std::size_t n = std::min(left, kMaxChunk);
        int outl = 0;
        if (EVP_EncryptUpdate(ctx, out, &outl, in, static_cast<int>(n)) != 1 ||
            static_cast<std::size_t>(outl) != n) {
            throw Error(ErrorCode::internal, "AES-256-GCM encryption failed");
        }
        out += n;
        in += n;
        left -= n;
    }
    int final_len = 0;
    std::array<unsigned char, kTagSize> tag{};
    if (EVP_EncryptFinal_ex(ctx, out, &final_len) != 1 || final_len != 0 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, static_cast<int>(kTagSize), tag.data()) !=
            1) {
        throw Error(ErrorCode::internal, "AES-256-GCM encryption failed");
    }
    blob.append(reinterpret_cast<const char*>(tag.data()), tag.size());
    return blob;
}

// Lets callers see which key a stored value needs (e.g. to find values left on an old key).
std::uint32_t ciphertext_key_id(std::string_view blob) {
    if (blob.size() < kMinBlobSize) {
        throw decryption_error("ciphertext is truncated");
    }
    if (static_cast<unsigned char>(blob[0]) != kFormatVersion) {
        throw decryption_error("unknown ciphertext format version");
    }
    return get_u32_be(blob, 1);
}

// Opens a stored secret, failing closed on any mismatch of key, place or content.
std::string decrypt_secret(const std::vector<Key>& keys, std::string_view blob,
                           std::string_view aad) {
    const std::uint32_t id = ciphertext_key_id(blob);
    const auto key =
        std::find_if(keys.begin(), keys.end(), [id](const Key& k) { return k.id == id; });
    if (key == keys.end()) {
        throw Error(ErrorCode::decryption_failed,
                    "could not decrypt secret: no configured encryption key matches its key id",
                    "The ciphertext names key id " + std::to_string(id) + ".");
    }

    const std::string_view nonce = blob.substr(1 + kKeyIdSize, kNonceSize);
    const std::string_view body = blob.substr(kHeaderSize, blob.size() - kMinBlobSize);
    std::array<unsigned char, kTagSize> tag{};
    std::copy_n(blob.end() - static_cast<std::ptrdiff_t>(kTagSize), kTagSize, tag.begin());

    EVP_CIPHER_CTX* ctx = keyed_ctx(*key, false);
    if (EVP_DecryptInit_ex(ctx, nullptr, nullptr, nullptr,
                           reinterpret_cast<const unsigned char*>(nonce.data())) != 1) {
        throw Error(ErrorCode::internal, "could not initialise AES-256-GCM");
    }
    feed_aad(ctx, aad, false);

    std::string plain(body.size(), '\0');
    auto* out = reinterpret_cast<unsigned char*>(plain.data());
    const auto* in = reinterpret_cast<const unsigned char*>(body.data());
    std::size_t left = body.size();
    while (left > 0) {
        const std::size_t n = std::min(left, kMaxChunk);
        int outl = 0;
        if (EVP_DecryptUpdate(ctx, out, &outl, in, static_cast<int>(n)) != 1 ||
            static_cast<std::size_t>(outl) != n) {
            wipe(plain);
            throw decryption_error("AES-256-GCM decryption failed");
        }
        out += n;
        in += n;
        left -= n;
    }
    int final_len = 0;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, static_cast<int>(kTagSize), tag.data()) !=
            1 ||
        EVP_DecryptFinal_ex(ctx, out, &final_len) != 1) {
        wipe(plain);
        throw decryption_error(
            "authentication failed (wrong key, value moved to another row or column, or "
            "tampered)");
    }
    return plain;
}

std::string hex_encode(std::string_view bytes) {
    static const char* const digits = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size() * 2);
    for (const char c : bytes) {
        const auto b = static_cast<unsigned char>(c);
        out.push_back(digits[b >> 4U]);
        out.push_back(digits[b & 0xFU]);
    }
    return out;
}

std::string sha256_hex(std::string_view bytes) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
    unsigned int len = 0;
    if (EVP_Digest(bytes.data(), bytes.size(), digest.data(), &len, EVP_sha256(), nullptr) != 1) {
        throw Error(ErrorCode::internal, "SHA-256 failed");
    }
    return hex_encode(std::string_view(reinterpret_cast<const char*>(digest.data()), len));
}

std::string base64_pack(std::string_view bytes) {
    std::string out(4 * ((bytes.size() + 2) / 3), '\0');
    const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(bytes.data()),
                                  static_cast<int>(bytes.size()));
    out.resize(static_cast<std::size_t>(std::max(n, 0)));
    return out;
}

std::string base64_unpack(std::string_view text) {
    if (text.size() % 4 != 0 || text.size() > static_cast<std::size_t>(INT_MAX)) {
        throw Error(ErrorCode::invalid_parameter, "invalid base64 text");
    }
    std::string out(3 * (text.size() / 4), '\0');
    const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(text.data()),
                                  static_cast<int>(text.size()));
    if (n < 0) throw Error(ErrorCode::invalid_parameter, "invalid base64 text");
    // EVP_DecodeBlock counts the bytes the padding stands for: take them off again.
    auto len = static_cast<std::size_t>(n);
    for (std::size_t i = text.size(); i > 0 && text[i - 1] == '=' && len > 0; --i) --len;
    out.resize(len);
    return out;
}

}  // namespace upstream_token
