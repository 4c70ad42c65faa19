// Unit tests of the lexical JSON repair (src/core/json_repair.cpp) used before giving up on
// a token endpoint's answer.
#include "core/json_repair.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>

namespace upstream_token {
namespace {

const std::string kFffd(kReplacementCharacter);

TEST(JsonRepair, ValidJsonIsNeverChanged) {
    for (const char* text :
         {"", "{}", "[]", R"({"a":1e308,"b":-1.7976931348623157e308,"c":1e-400})",
          R"({"s":"caf\u00e9 \ud83d\ude00 caf)"
          "\xc3\xa9"
          R"( \"1e400\" \\"})",
          R"([0,-0,0.5,123456789012345678901234567890,1E+2,1e-9999999999999])",
          "\"\xf0\x9f\x98\x80\xe2\x82\xac\xed\x9f\xbf\xf4\x8f\xbf\xbf\""}) {
        EXPECT_FALSE(repair_json_text(text)) << text;
    }
}

TEST(JsonRepair, NumbersBeyondADoubleAreCapped) {
    EXPECT_EQ(repair_json_text(R"({"e":1e400})"), R"({"e":1e308})");
    EXPECT_EQ(repair_json_text(R"({"e":-1e400})"), R"({"e":-1e308})");
    EXPECT_EQ(repair_json_text("[1.8e308,1.7e308]"), "[1e308,1.7e308]");
    EXPECT_EQ(repair_json_text("[0.000001e315]"), "[1e308]");
    EXPECT_EQ(repair_json_text("[1e99999999999999999999999]"), "[1e308]");
    EXPECT_EQ(repair_json_text("[" + std::string(400, '9') + "]"), "[1e308]");
    // Zero and tiny values are fine; not-a-number literals are left to the parser.
    EXPECT_FALSE(repair_json_text("[0e99999,0.0e400,1e-400]"));
    EXPECT_FALSE(repair_json_text("[01e400,1.e400,1e+,--1e400,1e400.5]"));
    // Inside a string it is text, not a number.
    EXPECT_FALSE(repair_json_text(R"(["1e400"])"));
}

TEST(JsonRepair, BadBytesInStringsBecomeReplacementCharacters) {
    EXPECT_EQ(repair_json_text("[\"caf\xe9\"]"), "[\"caf" + kFffd + "\"]");
    EXPECT_EQ(repair_json_text("[\"a\tb\nc\"]"), "[\"a" + kFffd + "b" + kFffd + "c\"]");
    // Overlong, surrogate, beyond U+10FFFF, truncated sequences: one replacement per byte.
    EXPECT_EQ(repair_json_text("[\"\xc0\xaf\"]"), "[\"" + kFffd + kFffd + "\"]");
    EXPECT_EQ(repair_json_text("[\"\xed\xa0\x80\"]"), "[\"" + kFffd + kFffd + kFffd + "\"]");
    EXPECT_EQ(repair_json_text("[\"\xf4\x90\x80\x80\"]"),
              "[\"" + kFffd + kFffd + kFffd + kFffd + "\"]");
    EXPECT_EQ(repair_json_text("[\"\xe2\x82\"]"), "[\"" + kFffd + kFffd + "\"]");
    EXPECT_EQ(repair_json_text(std::string("[\"\0\"]", 5)), "[\"" + kFffd + "\"]");
    // Escapes are kept as they are, including an escaped quote before a bad byte.
    EXPECT_EQ(repair_json_text("[\"\\\"\xff\"]"), "[\"\\\"" + kFffd + "\"]");
}

TEST(JsonRepair, RepairedTextParses) {
    for (const std::string& text :
         {std::string(R"({"access_token":"a","expires_in":1e400,"scope":"caf)") + "\xe9\"}",
          std::string("{\"a\":\"\x01\",\"b\":[-1e999,\"\xff\xfe\"]}")}) {
        EXPECT_TRUE(nlohmann::json::parse(text, nullptr, false).is_discarded());
        const auto fixed = repair_json_text(text);
        ASSERT_TRUE(fixed);
        EXPECT_FALSE(nlohmann::json::parse(*fixed, nullptr, false).is_discarded()) << *fixed;
    }
}

TEST(JsonRepair, NothingAfterANulOutsideStringsIsTouched) {
    // Found by fuzzing: the parser stops at a NUL outside strings, so the text it accepted
    // must not count as repaired because of bytes after it.
    const std::string text("26\t\0>\"\x06", 7);
    EXPECT_FALSE(nlohmann::json::parse(text, nullptr, false).is_discarded());
    EXPECT_FALSE(repair_json_text(text));
    EXPECT_EQ(repair_json_text(std::string("[1e400]\0\"\x01", 10)),
              std::string("[1e308]\0\"\x01", 10));
}

TEST(JsonRepair, UnterminatedInputIsSafe) {
    EXPECT_EQ(repair_json_text("[\"\xff"), "[\"" + kFffd);
    EXPECT_FALSE(repair_json_text("[\"\\"));
    EXPECT_FALSE(repair_json_text("-"));
    EXPECT_FALSE(repair_json_text("\""));
}

}  // namespace
}  // namespace upstream_token
