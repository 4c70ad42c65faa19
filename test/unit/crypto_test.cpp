// Unit tests of the secret encryption (src/core/crypto.cpp).
#include "core/crypto.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>

#include "core/error.hpp"

namespace upstream_token {
namespace {

constexpr std::string_view kKeyHex =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
constexpr std::string_view kOtherKeyHex =
    "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
constexpr std::string_view kSecret = "refresh-SECRET-value-1234567890";

// Runs f, expects an Error with the given code, and returns its message for further checks.
template <typename F>
std::string expect_error(F&& f, ErrorCode code) {
    try {
        f();
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), code) << e.what();
        return std::string(e.what()) + "|" + e.detail() + "|" + e.hint();
    }
    ADD_FAILURE() << "no Error thrown";
    return {};
}

// Hex of a blob, to check that no message echoes ciphertext bytes.
std::string hex(std::string_view s) {
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (const char c : s) {
        const auto b = static_cast<unsigned char>(c);
        out.push_back(digits[b >> 4U]);
        out.push_back(digits[b & 0xFU]);
    }
    return out;
}

class CryptoTest : public ::testing::Test {
  protected:
    Key key = parse_key_text(kKeyHex);
    Key other = parse_key_text(kOtherKeyHex);
    std::string aad = secret_aad("github", "session-1", "refresh_token");

    // Decryption must fail as decryption_failed without leaking the secret or the blob.
    static void expect_decrypt_fails(const std::vector<Key>& keys, const std::string& blob,
                                     const std::string& with_aad) {
        const std::string msg = expect_error([&] { decrypt_secret(keys, blob, with_aad); },
                                             ErrorCode::decryption_failed);
        EXPECT_EQ(msg.find(kSecret), std::string::npos);
        EXPECT_EQ(msg.find(std::string(kKeyHex)), std::string::npos);
        if (blob.size() > 8) {
            EXPECT_EQ(msg.find(hex(blob)), std::string::npos);
            EXPECT_EQ(msg.find(blob.substr(5)), std::string::npos);
        }
    }
};

TEST_F(CryptoTest, ParseKeyAcceptsLowerUpperAndNewlines) {
    const Key upper =
        parse_key_text("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F");
    EXPECT_EQ(upper.bytes, key.bytes);
    EXPECT_EQ(parse_key_text(std::string(kKeyHex) + "\n").bytes, key.bytes);
    EXPECT_EQ(parse_key_text(std::string(kKeyHex) + "\r\n").bytes, key.bytes);
    for (std::size_t i = 0; i < key.bytes.size(); ++i) {
        EXPECT_EQ(key.bytes.at(i), i);
    }
    EXPECT_EQ(key.id, key_id_of(key.bytes));
}

TEST_F(CryptoTest, ParseKeyRejectsEverythingElse) {
    const std::string k(kKeyHex);
    const std::vector<std::string> bad = {
        "",
        "\n",
        k.substr(0, 63),
        k + "0",
        k + "\n\n",
        k + "\r",
        k + " ",
        " " + k,
        k.substr(0, 62) + "zz",
        k.substr(0, 62) + "g1",
        k.substr(0, 31) + " " + k.substr(32),
        "\n" + k,
        k + "\n" + k,
        std::string(128, 'a'),
    };
    for (const auto& text : bad) {
        const std::string msg =
            expect_error([&] { parse_key_text(text); }, ErrorCode::key_unavailable);
        // The message may give a length but never the content.
        if (text.size() >= 32) {
            EXPECT_EQ(msg.find(text.substr(0, 32)), std::string::npos) << msg;
        }
    }
}

TEST_F(CryptoTest, KeyIdIsPinned) {
    // SHA-256("upstream_token key id" || 00 01 .. 1f), first 4 bytes big endian. Pinned: a
    // change would orphan every stored ciphertext.
    EXPECT_EQ(key.id, 0xE7D1FCBAU);
    std::array<unsigned char, 32> zero{};
    EXPECT_EQ(key_id_of(zero), 0xC5055608U);
    EXPECT_NE(key.id, other.id);
}

TEST_F(CryptoTest, AadIsInjective) {
    EXPECT_NE(secret_aad("a", "bc", "x"), secret_aad("ab", "c", "x"));
    EXPECT_NE(secret_aad("a", "b", "cx"), secret_aad("a", "bc", "x"));
    EXPECT_NE(secret_aad("", "ab", "c"), secret_aad("a", "b", "c"));
    EXPECT_NE(secret_aad("p", "s", "access_token"), secret_aad("p", "s", "refresh_token"));
    EXPECT_EQ(secret_aad("p", "s", "c"), secret_aad("p", "s", "c"));
    // An embedded NUL does not make two triples collide either.
    EXPECT_NE(secret_aad(std::string("a\0b", 3), "c", "d"),
              secret_aad("a", std::string("b\0c", 3), "d"));
    EXPECT_EQ(secret_aad("p", "s", "c").rfind("upstream_token/v1", 0), 0U);
}

TEST_F(CryptoTest, RoundTrip) {
    const std::string blob = encrypt_secret(key, kSecret, aad);
    EXPECT_EQ(blob.size(), 1 + 4 + 12 + kSecret.size() + 16);
    EXPECT_EQ(static_cast<unsigned char>(blob[0]), 0x01);
    EXPECT_EQ(ciphertext_key_id(blob), key.id);
    EXPECT_EQ(blob.find(kSecret), std::string::npos);
    EXPECT_EQ(decrypt_secret({key}, blob, aad), kSecret);
}

TEST_F(CryptoTest, KeyIdIsBigEndianInBlob) {
    const std::string blob = encrypt_secret(key, "x", aad);
    EXPECT_EQ(static_cast<unsigned char>(blob[1]), (key.id >> 24U) & 0xFFU);
    EXPECT_EQ(static_cast<unsigned char>(blob[4]), key.id & 0xFFU);
}

TEST_F(CryptoTest, EmptyPlaintext) {
    const std::string blob = encrypt_secret(key, "", aad);
    EXPECT_EQ(blob.size(), 1U + 4 + 12 + 16);
    EXPECT_EQ(decrypt_secret({key}, blob, aad), "");
}

TEST_F(CryptoTest, LargePlaintextAndBinary) {
    std::string big(8192, '\0');
    for (std::size_t i = 0; i < big.size(); ++i) {
        big[i] = static_cast<char>(i * 31U);
    }
    const std::string blob = encrypt_secret(key, big, aad);
    EXPECT_EQ(decrypt_secret({key}, blob, aad), big);
}

TEST_F(CryptoTest, EmptyAadWorks) {
    const std::string blob = encrypt_secret(key, kSecret, "");
    EXPECT_EQ(decrypt_secret({key}, blob, ""), kSecret);
}

TEST_F(CryptoTest, NonceIsFreshEveryCall) {
    std::set<std::string> blobs;
    std::set<std::string> nonces;
    for (int i = 0; i < 100; ++i) {
        const std::string blob = encrypt_secret(key, kSecret, aad);
        blobs.insert(blob);
        nonces.insert(blob.substr(5, 12));
    }
    EXPECT_EQ(blobs.size(), 100U);
    EXPECT_EQ(nonces.size(), 100U);
}

TEST_F(CryptoTest, WrongAadFails) {
    const std::string blob = encrypt_secret(key, kSecret, aad);
    expect_decrypt_fails({key}, blob, secret_aad("github", "session-1", "access_token"));
    expect_decrypt_fails({key}, blob, secret_aad("github", "session-2", "refresh_token"));
    expect_decrypt_fails({key}, blob, secret_aad("gitlab", "session-1", "refresh_token"));
    expect_decrypt_fails({key}, blob, "");
}

TEST_F(CryptoTest, EveryTamperedByteFails) {
    const std::string blob = encrypt_secret(key, kSecret, aad);
    for (std::size_t i = 0; i < blob.size(); ++i) {
        std::string t = blob;
        t[i] = static_cast<char>(t[i] ^ 0x01);
        expect_decrypt_fails({key}, t, aad);
    }
}

TEST_F(CryptoTest, TruncatedOrExtendedFails) {
    const std::string blob = encrypt_secret(key, kSecret, aad);
    for (std::size_t n = 0; n < blob.size(); ++n) {
        expect_decrypt_fails({key}, blob.substr(0, n), aad);
    }
    expect_decrypt_fails({key}, blob + "x", aad);
}

TEST_F(CryptoTest, UnknownVersionFails) {
    std::string blob = encrypt_secret(key, kSecret, aad);
    blob[0] = 0x02;
    expect_decrypt_fails({key}, blob, aad);
    expect_error([&] { ciphertext_key_id(blob); }, ErrorCode::decryption_failed);
    expect_error([&] { ciphertext_key_id("short"); }, ErrorCode::decryption_failed);
}

TEST_F(CryptoTest, UnknownKeyIdFails) {
    const std::string blob = encrypt_secret(key, kSecret, aad);
    expect_decrypt_fails({other}, blob, aad);
    expect_decrypt_fails({}, blob, aad);
}

TEST_F(CryptoTest, KeyWithRightIdButWrongBytesFails) {
    Key forged = other;
    forged.id = key.id;
    const std::string blob = encrypt_secret(key, kSecret, aad);
    expect_decrypt_fails({forged}, blob, aad);
}

TEST_F(CryptoTest, RotationPicksKeyById) {
    const std::string old_blob = encrypt_secret(key, "old", aad);
    const std::string new_blob = encrypt_secret(other, "new", aad);
    const std::vector<Key> keys = {other, key};
    EXPECT_EQ(decrypt_secret(keys, old_blob, aad), "old");
    EXPECT_EQ(decrypt_secret(keys, new_blob, aad), "new");
    EXPECT_EQ(ciphertext_key_id(new_blob), other.id);
}

// A key keeps its cipher contexts between uses: a failed use must not spoil the next one, and
// a copy whose bytes were changed must not seal with the bytes of the key it was copied from.
TEST_F(CryptoTest, KeyedContextsSurviveFailuresAndChangedCopies) {
    const std::string blob = encrypt_secret(key, kSecret, aad);
    std::string tampered = blob;
    tampered.back() = static_cast<char>(tampered.back() ^ 0x01);
    for (int i = 0; i < 3; ++i) {
        expect_decrypt_fails({key}, tampered, aad);
        EXPECT_EQ(decrypt_secret({key}, blob, aad), kSecret);
        expect_decrypt_fails({key}, blob, "");
        EXPECT_EQ(decrypt_secret({key}, encrypt_secret(key, "x", aad), aad), "x");
    }
    Key changed = key;  // shares the contexts keyed with key's bytes
    changed.bytes = other.bytes;
    changed.id = other.id;
    const std::string sealed = encrypt_secret(changed, kSecret, aad);
    EXPECT_EQ(decrypt_secret({parse_key_text(kOtherKeyHex)}, sealed, aad), kSecret);
    Key forged = parse_key_text(kOtherKeyHex);
    forged.id = key.id;  // key's id, other's bytes: must not open with key's contexts
    forged.ciphers = key.ciphers;
    expect_decrypt_fails({forged}, blob, aad);
    EXPECT_EQ(decrypt_secret({key}, blob, aad), kSecret);
}

TEST_F(CryptoTest, KeyWithInconsistentIdIsRefusedForEncryption) {
    Key k = key;
    k.id ^= 1U;
    expect_error([&] { encrypt_secret(k, kSecret, aad); }, ErrorCode::internal);
}

}  // namespace
}  // namespace upstream_token
