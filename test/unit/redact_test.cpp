// Secrets a provider quotes back never survive into stored or logged error texts.
#include <gtest/gtest.h>

#include "core/redact.hpp"

namespace ut = upstream_token;

TEST(Redact, RemovesRawAndEncodedForms) {
    const std::string secret = "abc def+ghi";
    const std::string text = "bad secret 'abc def+ghi' or abc+def%2Bghi given";
    const std::string out = ut::redact_secrets(text, {secret});
    EXPECT_EQ(out.find("abc def+ghi"), std::string::npos);
    EXPECT_EQ(out.find("abc+def%2Bghi"), std::string::npos);
    EXPECT_NE(out.find("[redacted]"), std::string::npos);
    EXPECT_NE(out.find("bad secret"), std::string::npos);
}

TEST(Redact, RemovesEveryOccurrenceOfEverySecret) {
    const std::string out =
        ut::redact_secrets("zzzzlowercase token zzzz and rt-1234 rt-1234", {"zzzz", "rt-1234"});
    EXPECT_EQ(out, "[redacted]lowercase token [redacted] and [redacted] [redacted]");
}

TEST(Redact, ShortSecretsAreIgnored) {
    EXPECT_EQ(ut::redact_secrets("a b c", {"a", ""}), "a b c");
}
