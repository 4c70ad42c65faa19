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
        throw Error(ErrorCode::key_unavailable, "could not read the key file named by upstream_token.key_file",
                    {}, hint);
    }
    if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        throw Error(ErrorCode::key_unavailable, "the key file is accessible by other users",
                    "Its mode must allow access by its owner only.", "chmod 600 the key file");
    }
    std::ifstream in(path, std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof()) {
        throw Error(ErrorCode::key_unavailable, "could not read the key file named by upstream_token.key_file",
                    {}, hint);
    }
    Key key = parse_key_text(text);
    std::fill(text.begin(), text.end(), '\0');
    return key;
}

// The backend's key cache, reloaded when the configured path changes.
struct KeyCache {
    std::string path;
    std::vector<Key> keys;
};

KeyCache& cache() {
    static KeyCache c;
    return c;
}

// Makes sure the cache matches the current setting.
const std::vector<Key>& refreshed_keys() {
    KeyCache& c = cache();
    const std::string path = key_file_path();
    if (c.keys.empty() || c.path != path) {
        c.keys.clear();
        c.keys.push_back(load_key(path));
        c.path = path;
    }
    return c.keys;
}

}  // namespace

const Key& current_key() { return refreshed_keys().front(); }

const std::vector<Key>& known_keys() { return refreshed_keys(); }

}  // namespace upstream_token::pg
