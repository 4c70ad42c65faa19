// The token lock key is SHA-256 based, stable, and separates its fields; the spread hash is
// 0.1.0's FNV-1a, unchanged.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "core/lock_key.hpp"

namespace ut = upstream_token;

TEST(TokenLockKey, KnownValues) {
    // SHA-256 of 00000000 00000000 starts af5570f5a1810b7a.
    EXPECT_EQ(ut::token_lock_key("", ""), static_cast<std::int64_t>(0xaf5570f5a1810b7aULL));
    EXPECT_EQ(ut::token_lock_key("github", "sess-a"), INT64_C(-3605618850449074881));
}

TEST(TokenLockKey, LengthPrefixSeparatesFields) {
    EXPECT_NE(ut::token_lock_key("ab", "c"), ut::token_lock_key("a", "bc"));
    EXPECT_NE(ut::token_lock_key("a", "b"), ut::token_lock_key("b", "a"));
    EXPECT_NE(ut::token_lock_key(std::string("a\0", 2), "b"),
              ut::token_lock_key("a", std::string("\0b", 2)));
}

TEST(TokenLockKey, DistinctForManySessions) {
    std::set<std::int64_t> keys;
    for (int i = 0; i < 10000; ++i)
        keys.insert(ut::token_lock_key("p", "sess-" + std::to_string(i)));
    EXPECT_EQ(keys.size(), 10000U);
}

TEST(TokenLockKey, NotTheOldPublicKey) {
    EXPECT_NE(ut::token_lock_key("github", "sess-a"), ut::stable_token_hash("github", "sess-a"));
}

TEST(StableTokenHash, IsFnv1aOfTheOldLockKey) {
    // FNV-1a 64 of "a\0b".
    std::uint64_t h = 14695981039346656037ULL;
    for (const unsigned char c : std::string("a\0b", 3)) {
        h ^= c;
        h *= 1099511628211ULL;
    }
    EXPECT_EQ(ut::stable_token_hash("a", "b"), static_cast<std::int64_t>(h));
}
