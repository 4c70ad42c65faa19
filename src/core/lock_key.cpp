#include "core/lock_key.hpp"

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
}  // namespace

std::int64_t refresh_lock_key(std::string_view provider, std::string_view session) {
    std::uint64_t h = 14695981039346656037ULL;
    h = fnv1a(h, provider);
    h = fnv1a(h, std::string_view("\0", 1));
    h = fnv1a(h, session);
    return static_cast<std::int64_t>(h);
}

}  // namespace upstream_token
