#include "pg/prelude.hpp"
#include "pg/keys.hpp"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <string>

#include "core/error.hpp"
#include "pg/compat.hpp"
#include "pg/gucs.hpp"

namespace upstream_token::pg {

namespace {

constexpr std::int64_t kReadCheckEveryNs = 1000LL * 1000 * 1000;
// A file modified this close to when it was read may change again within the same timestamp
// tick (file times are coarse): its stat identity is not trusted and it is read again.
constexpr std::int64_t kRacyWindowNs = 2LL * 1000 * 1000 * 1000;

// A timespec in nanoseconds (file times and clocks compared as plain numbers).
std::int64_t ns_of(const timespec& t) {
    return static_cast<std::int64_t>(t.tv_sec) * 1000000000LL + t.tv_nsec;
}

// What identifies a file's content without reading it.
struct FileIdentity {
    dev_t dev = 0;
    ino_t ino = 0;
    off_t size = -1;
    std::int64_t mtime_ns = 0;
    std::int64_t ctime_ns = 0;
    bool operator==(const FileIdentity& o) const {
        return dev == o.dev && ino == o.ino && size == o.size && mtime_ns == o.mtime_ns &&
               ctime_ns == o.ctime_ns;
    }
};

// The identity of a file from its stat data.
FileIdentity identity_of(const struct stat& st) {
    return FileIdentity{st.st_dev, st.st_ino, st.st_size, ns_of(st.st_mtim), ns_of(st.st_ctim)};
}

const std::string kHint = "Create one with: openssl rand -hex 32 > FILE; chmod 600 FILE";

// The error for a key file that cannot be opened or read (never naming its content).
Error unreadable() {
    return Error(ErrorCode::key_unavailable,
                 "could not read the key file named by upstream_token.key_file", {}, kHint);
}

// A key file as it was when its key was read.
struct FileState {
    FileIdentity identity;
    bool racy = false;  // modified shortly before it was read: read it again at the next check
};

// A key as read from its file; its bytes are wiped when it goes.
struct LoadedKey {
    Key key;
    FileState file;
    LoadedKey() = default;
    LoadedKey(const LoadedKey&) = default;
    LoadedKey& operator=(const LoadedKey&) = default;
    ~LoadedKey() { OPENSSL_cleanse(key.bytes.data(), key.bytes.size()); }
};

// Closes a file descriptor on every path.
struct Fd {
    int fd;
    ~Fd() {
        if (fd >= 0) ::close(fd);
    }
};

// Reads and checks a key file; refuses files others can read (the key would leak).
LoadedKey load_key(const std::string& path) {
    if (path.empty()) {
        throw Error(ErrorCode::key_unavailable, "upstream_token.key_file is not set",
                    "Secrets cannot be stored or read without an encryption key.",
                    "Set upstream_token.key_file in postgresql.conf. " + kHint);
    }
    Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
    struct stat st {};
    if (f.fd < 0 || ::fstat(f.fd, &st) != 0) throw unreadable();
    if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        throw Error(ErrorCode::key_unavailable, "the key file is accessible by other users",
                    "Its mode must allow access by its owner only.", "chmod 600 the key file");
    }
    std::string text(256, '\0');
    std::size_t used = 0;
    for (;;) {
        if (used == text.size()) text.resize(text.size() * 2);
        const ssize_t n = ::read(f.fd, text.data() + used, text.size() - used);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            OPENSSL_cleanse(text.data(), text.size());
            throw unreadable();
        }
        if (n == 0) break;
        used += static_cast<std::size_t>(n);
        if (used > 4096) break;  // a key file is 64 hex characters; parse_key_text refuses this
    }
    text.resize(used);
    LoadedKey out{};
    try {
        out.key = parse_key_text(text);
    } catch (...) {
        OPENSSL_cleanse(text.data(), text.size());
        throw;
    }
    OPENSSL_cleanse(text.data(), text.size());
    out.file.identity = identity_of(st);
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);
    const std::int64_t modified = std::max(out.file.identity.mtime_ns, out.file.identity.ctime_ns);
    out.file.racy = ns_of(now) - modified < kRacyWindowNs;
    return out;
}

// True when the file at `path` may no longer hold what was read from it.
bool changed(const std::string& path, const FileState& file) {
    if (file.racy) return true;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return true;  // gone or unreadable: reload says which
    return !(identity_of(st) == file.identity);
}

// The process's keys and the files they came from.
struct KeyCache {
    std::string path;           // upstream_token.key_file the keys were read for
    std::string previous_path;  // upstream_token.previous_key_file, likewise
    FileState current;
    std::optional<FileState> previous;
    std::vector<Key> keys;        // current first, then the previous one
    std::int64_t checked_ns = 0;  // CLOCK_MONOTONIC of the last check against the files
    LocalTransactionId sealed_in = InvalidLocalTransactionId;  // transaction of the last seal check
};

// The process's key cache (one per backend or engine, like PostgreSQL's own caches).
KeyCache& cache() {
    static KeyCache c;
    return c;
}

// Overwrites keys that are being replaced, so no old key lingers in memory.
void wipe(std::vector<Key>& keys) {
    for (Key& k : keys) OPENSSL_cleanse(k.bytes.data(), k.bytes.size());
    keys.clear();
}

// A cheap clock for "at most once a second" (no system call: vDSO, coarse).
std::int64_t monotonic_ns() {
    timespec t{};
    ::clock_gettime(CLOCK_MONOTONIC_COARSE, &t);
    return ns_of(t);
}

// Makes sure the cache matches the settings and, when `check_files` says so, the files.
const std::vector<Key>& refreshed_keys(bool check_files) {
    // A statement that began before a reload still has the old settings: the old key file may
    // be gone and the engine may already seal under the new one.
    if (check_files) apply_pending_reload();
    KeyCache& c = cache();
    const char* path = key_file_path();  // compared without copying: this runs on every get
    const char* previous = previous_key_file_path();
    const bool settings_changed = c.keys.empty() || c.path != path || c.previous_path != previous;
    if (!settings_changed && !check_files) return c.keys;
    const std::int64_t now = monotonic_ns();
    if (!settings_changed && !changed(c.path, c.current) &&
        !(c.previous && changed(c.previous_path, *c.previous))) {
        c.checked_ns = now;
        return c.keys;
    }
    LoadedKey current = load_key(path);
    std::optional<LoadedKey> old;
    if (*previous != '\0') {
        try {
            old = load_key(previous);
        } catch (const Error& e) {
            throw Error(ErrorCode::key_unavailable,
                        std::string("upstream_token.previous_key_file: ") + e.what(), e.detail(),
                        e.hint());
        }
    }
    wipe(c.keys);
    c.keys.push_back(current.key);
    c.current = current.file;
    c.previous.reset();
    if (old) {
        c.keys.push_back(old->key);
        c.previous = old->file;
    }
    c.path = path;
    c.previous_path = previous;
    c.checked_ns = now;
    return c.keys;
}

// True when the files are due for a check on the read path.
bool read_check_due() {
    return monotonic_ns() - cache().checked_ns >= kReadCheckEveryNs;
}

}  // namespace

const Key& current_key() {
    // Checked at a transaction's first seal: one that began after the key file changed seals
    // under the new key, one that began before is what rotate_key waits for. The engine seals
    // three values per refresh and many refreshes per transaction.
    KeyCache& c = cache();
    const LocalTransactionId txn = compat::my_local_transaction_id();
    const bool checked = txn != InvalidLocalTransactionId && c.sealed_in == txn;
    const Key& key = refreshed_keys(!checked).front();
    c.sealed_in = txn;
    return key;
}

const std::vector<Key>& known_keys() {
    return refreshed_keys(read_check_due());
}

const std::vector<Key>& known_keys_checked_now() {
    return refreshed_keys(true);
}

}  // namespace upstream_token::pg
