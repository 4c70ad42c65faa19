// libFuzzer target: the key file (parse_key_text) and the ciphertext format read with a key
// (ciphertext_key_id, decrypt_secret). Input: the key file's text, also read as a stored
// ciphertext and, when short, sealed and opened again.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/crypto.hpp"
#include "core/error.hpp"
#include "fuzz_check.hpp"

using namespace upstream_token;
using upstream_token::fuzz::require;

namespace {

// Lower-case hex of the key bytes, to compare with the text it came from.
std::string hex(const Key& k) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out;
    for (const unsigned char b : k.bytes) {
        out.push_back(kDigits[b >> 4U]);
        out.push_back(kDigits[b & 0xFU]);
    }
    return out;
}

// A fixed key for the ciphertext checks.
const Key& test_key() {
    static const Key key =
        parse_key_text("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n");
    return key;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view in = fuzz::as_text(data, size);
    try {
        const Key k = parse_key_text(in);
        std::string lower(in.substr(0, 64));
        for (char& c : lower) {
            c = static_cast<char>(c >= 'A' && c <= 'F' ? c - 'A' + 'a' : c);
        }
        require(hex(k) == lower, "key bytes are the hex text");
        require(k.id == key_id_of(k.bytes), "key id of the key bytes");
    } catch (const Error& e) {
        require(e.code() == ErrorCode::key_unavailable, "key errors");
        require(fuzz::printable_ascii(e.what()) && std::string_view(e.what()).size() < 120,
                "short, printable key error");
    }

    const std::string aad = secret_aad("provider", "session", "refresh_token");
    try {
        (void)ciphertext_key_id(in);
        (void)decrypt_secret({test_key()}, in, aad);
        require(false, "a forged ciphertext opened");
    } catch (const Error& e) {
        require(e.code() == ErrorCode::decryption_failed, "decryption errors");
    }
    if (size <= 64 && (size == 0 || data[0] % 8 == 0)) {  // sealing is slow: a sample
        const std::string sealed = encrypt_secret(test_key(), in, aad);
        require(ciphertext_key_id(sealed) == test_key().id, "sealed under the key");
        require(decrypt_secret({test_key()}, sealed, aad) == in, "seal/open round trip");
    }
    return 0;
}
