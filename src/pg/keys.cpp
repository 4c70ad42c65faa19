#include "pg/keys.hpp"

#include <sys/stat.h>

#include <fstream>
#include <iterator>
#include <string>

#include "core/error.hpp"
#include "pg/gucs.hpp"

namespace upstream_token::pg {

namespace {

// Reads and checks the key file; refuses files others can read (the key would leak).
Key load_key(const std::string& path) {
    const std::string hint = "Create one with: openssl rand -hex 32 > FILE; chmod 600 FILE";
    if (path.empty()) {
        throw Error(ErrorCode::key_unavailable, "upstream_token.key_file is not set",
                    "Secrets cannot be stored or read without an encryption key.",
                    "Set upstream_token.key_file in postgresql.conf. " + hint);
    }
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        throw Error(ErrorCode::key_unavailable,
                    "could not read the key file named by upstream_token.key_file", {}, hint);
    }
    if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        throw Error(ErrorCode::key_unavailable, "the key file is accessible by other users",
                    "Its mode must allow access by its owner only.", "chmod 600 the key file");
    }
    std::ifstream in(path, std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof()) {
        throw Error(ErrorCode::key_unavailable,
                    "could not read the key file named by upstream_token.key_file", {}, hint);
    }
    Key key = parse_key_text(text);
    std::fill(text.begin(), text.end(), '\0');
    return key;
}

// The backend's key cache, reloaded when the configured path changes.
struct KeyCache {
    std::string path;           // upstream_token.key_file the keys were read for
    std::string previous_path;  // upstream_token.previous_key_file, likewise
    std::vector<Key> keys;      // current first, then the previous one
};

KeyCache& cache() {
    static KeyCache c;
    return c;
}

// Makes sure the cache matches the current settings.
const std::vector<Key>& refreshed_keys() {
    KeyCache& c = cache();
    const char* path = key_file_path();  // compared without copying: this runs on every get
    const char* previous = previous_key_file_path();
    if (c.keys.empty() || c.path != path || c.previous_path != previous) {
        std::vector<Key> keys{load_key(path)};
        if (*previous != '\0') {
            try {
                keys.push_back(load_key(previous));
            } catch (const Error& e) {
                throw Error(ErrorCode::key_unavailable,
                            std::string("upstream_token.previous_key_file: ") + e.what(),
                            e.detail(), e.hint());
            }
        }
        c.keys = std::move(keys);
        c.path = path;
        c.previous_path = previous;
    }
    return c.keys;
}

}  // namespace

const Key& current_key() {
    return refreshed_keys().front();
}

const std::vector<Key>& known_keys() {
    return refreshed_keys();
}

}  // namespace upstream_token::pg
