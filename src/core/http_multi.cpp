// libcurl multi interface driven through one epoll descriptor (see http_multi.hpp).
//
// curl tells us which sockets to watch (socket callback) and when to call it back without
// socket activity (timer callback); both only record state here, all work happens in drive().
// The multi handle lives as long as the object, so its connection cache keeps keep-alive
// connections warm; a share handle keeps TLS sessions across connections.
#include "core/http_multi.hpp"

#include <curl/curl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <unordered_map>
#include <utility>

#include "core/http_header.hpp"

namespace upstream_token {

namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr long kMaxConnects = 64;  // the smallest connection cache
constexpr std::size_t kMaxErrorDetailLength = 200;
constexpr int kEpollBatch = 64;
constexpr int kMaxDriveRounds = 16;
constexpr long kMaxTimerMs = 24L * 60 * 60 * 1000;

// Deleter so a CURL* easy handle is owned by a unique_ptr.
struct EasyDeleter {
    void operator()(CURL* easy) const noexcept { curl_easy_cleanup(easy); }
};
// Deleter so a CURLM* multi handle is owned by a unique_ptr.
struct MultiDeleter {
    void operator()(CURLM* multi) const noexcept { curl_multi_cleanup(multi); }
};
// Deleter so a CURLSH* share handle is owned by a unique_ptr.
struct ShareDeleter {
    void operator()(CURLSH* share) const noexcept { curl_share_cleanup(share); }
};
// Deleter so a header list is owned by a unique_ptr.
struct SlistDeleter {
    void operator()(curl_slist* list) const noexcept { curl_slist_free_all(list); }
};

using EasyPtr = std::unique_ptr<CURL, EasyDeleter>;
using MultiPtr = std::unique_ptr<CURLM, MultiDeleter>;
using SharePtr = std::unique_ptr<CURLSH, ShareDeleter>;
using SlistPtr = std::unique_ptr<curl_slist, SlistDeleter>;

// Owns one file descriptor so it is closed exactly once, whatever path leaves the scope.
class FdOwner {
  public:
    explicit FdOwner(int fd) noexcept : fd_(fd) {}
    ~FdOwner() {
        if (fd_ >= 0) {
            ::close(fd_);
        }
    }
    FdOwner(const FdOwner&) = delete;
    FdOwner& operator=(const FdOwner&) = delete;
    int get() const noexcept { return fd_; }

  private:
    int fd_;
};

// libcurl's global state must be initialised once per process before any handle exists;
// a function-local static makes that thread-safe without global mutable state of our own.
void ensure_curl_global_init() {
    static const CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (rc != CURLE_OK) {
        throw std::runtime_error(std::string("curl_global_init failed: ") + curl_easy_strerror(rc));
    }
}

// curl takes timeouts in whole milliseconds where 0 means "no limit": round up and keep >= 1
// so a tiny or zero configured timeout still bounds the transfer.
long timeout_ms(Micros t) {
    const std::int64_t us = std::max<std::int64_t>(t.count(), 1);
    const std::int64_t ms = (us + 999) / 1000;
    return static_cast<long>(std::min<std::int64_t>(ms, std::numeric_limits<long>::max()));
}

// ASCII case-insensitive prefix test for header names (locale-independent).
bool starts_with_ci(const char* data, std::size_t len, const char* prefix) {
    const std::size_t plen = std::strlen(prefix);
    if (len < plen) {
        return false;
    }
    for (std::size_t i = 0; i < plen; ++i) {
        const auto a = static_cast<unsigned char>(data[i]);
        const auto b = static_cast<unsigned char>(prefix[i]);
        if (std::tolower(a) != std::tolower(b)) {
            return false;
        }
    }
    return true;
}

// Appends one header line to an owned curl_slist; false (list unchanged) when out of memory.
bool append_header(SlistPtr& list, const char* line) {
    curl_slist* head = curl_slist_append(list.get(), line);
    if (head == nullptr) {
        return false;
    }
    // curl_slist_append returns the existing head, or the new node for an empty list.
    (void)list.release();
    list.reset(head);
    return true;
}

// Whether curl's error buffer adds useful, secret-free detail for this kind of failure
// (connect/TLS/timeout messages name host, port and the TLS reason, never the request body).
bool error_detail_useful(CURLcode code) {
    switch (code) {
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
        case CURLE_COULDNT_CONNECT:
        case CURLE_OPERATION_TIMEDOUT:
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CIPHER:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_SSL_ISSUER_ERROR:
        case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
        case CURLE_SSL_INVALIDCERTSTATUS:
        case CURLE_SSL_CRL_BADFILE:
        case CURLE_SSL_SHUTDOWN_FAILED:
        case CURLE_SSL_ENGINE_INITFAILED:
        case CURLE_UNSUPPORTED_PROTOCOL:
        case CURLE_GOT_NOTHING:
        case CURLE_RECV_ERROR:
        case CURLE_SEND_ERROR:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
        case CURLE_WEIRD_SERVER_REPLY:
            return true;
        default:
            return false;
    }
}

}  // namespace

// State of one request while curl works on it; owned by Impl, found again via CURLOPT_PRIVATE.
// Members the easy handle points into come first, so they are destroyed after it.
struct Transfer {
    std::uint64_t id = 0;
    SlistPtr headers;
    std::string request_body;  // CURLOPT_POSTFIELDS points here: must outlive the transfer
    std::string response_body;
    std::string retry_after;
    std::size_t max_response_bytes = 0;
    bool too_large = false;
    std::array<char, CURL_ERROR_SIZE> error_buffer{};
    EasyPtr easy;
};

// Declaration order matters: the multi handle is declared last so that, even when the
// constructor throws, it is cleaned up while everything its callbacks touch still exists.
struct HttpMulti::Impl {
    FdOwner epoll_fd{-1};
    SharePtr share;
    std::unordered_map<curl_socket_t, std::uint32_t> watched;  // socket -> epoll events
    std::optional<SteadyClock::time_point> timer_deadline;
    std::vector<HttpResult> finished;
    std::uint64_t next_id = 1;
    std::unordered_map<std::uint64_t, std::unique_ptr<Transfer>> transfers;
    MultiPtr multi;
    long connection_cache = kMaxConnects;

    Impl();
    ~Impl();

    std::uint64_t start(const HttpRequestSpec& spec);
    void drive();
    void run_timer_if_due();
    void collect_finished();
    void fail_immediately(std::uint64_t id, std::string error);
    static HttpResult make_result(Transfer& t, CURLcode code);

    static int on_socket(CURL* easy, curl_socket_t s, int what, void* userp, void* socketp);
    static int on_timer(CURLM* multi, long timeout_ms, void* userp);
    static std::size_t on_write(char* data, std::size_t size, std::size_t nmemb, void* userp);
    static std::size_t on_header(char* data, std::size_t size, std::size_t nmemb, void* userp);
};

// Sets up the epoll fd, the TLS-session share and the long-lived multi handle with our callbacks.
HttpMulti::Impl::Impl() : epoll_fd(::epoll_create1(EPOLL_CLOEXEC)) {
    ensure_curl_global_init();
    if (epoll_fd.get() < 0) {
        throw std::runtime_error(std::string("epoll_create1 failed: ") + std::strerror(errno));
    }

    share.reset(curl_share_init());
    if (!share ||
        curl_share_setopt(share.get(), CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK) {
        throw std::runtime_error("curl_share_init failed");
    }

    multi.reset(curl_multi_init());
    if (!multi) {
        throw std::runtime_error("curl_multi_init failed");
    }
    CURLM* m = multi.get();
    CURLMcode rc = curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, &Impl::on_socket);
    if (rc == CURLM_OK) rc = curl_multi_setopt(m, CURLMOPT_SOCKETDATA, this);
    if (rc == CURLM_OK) rc = curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, &Impl::on_timer);
    if (rc == CURLM_OK) rc = curl_multi_setopt(m, CURLMOPT_TIMERDATA, this);
    if (rc == CURLM_OK) rc = curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, kMaxConnects);
    if (rc == CURLM_OK) rc = curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, 0L);
    if (rc != CURLM_OK) {
        throw std::runtime_error(std::string("curl_multi_setopt failed: ") +
                                 curl_multi_strerror(rc));
    }
}

// Tears down in dependency order: transfers leave the multi before their easy handles die,
// the multi (whose cleanup may still call on_socket) goes while epoll fd and maps are alive,
// the share goes once no easy handle uses it; the epoll fd closes last.
HttpMulti::Impl::~Impl() {
    for (auto& entry : transfers) {
        curl_multi_remove_handle(multi.get(), entry.second->easy.get());
    }
    transfers.clear();
    multi.reset();
    share.reset();
    watched.clear();
}

// curl's socket callback: mirror what curl wants to watch into the epoll set. Never throws.
int HttpMulti::Impl::on_socket(CURL* /*easy*/, curl_socket_t s, int what, void* userp,
                               void* /*socketp*/) {
    try {
        auto* self = static_cast<Impl*>(userp);
        const int efd = self->epoll_fd.get();
        if (what == CURL_POLL_REMOVE) {
            // The socket may already be closed (then epoll dropped it itself): ignore errors.
            ::epoll_ctl(efd, EPOLL_CTL_DEL, s, nullptr);
            self->watched.erase(s);
            return 0;
        }
        std::uint32_t events = 0;
        if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) {
            events |= EPOLLIN;
        }
        if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) {
            events |= EPOLLOUT;
        }
        epoll_event ev{};
        ev.events = events;
        ev.data.fd = s;
        const bool known = self->watched.count(s) != 0;
        int rc = ::epoll_ctl(efd, known ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, s, &ev);
        if (rc != 0 && known && errno == ENOENT) {
            // fd number reused after a close curl did not report: register it afresh.
            rc = ::epoll_ctl(efd, EPOLL_CTL_ADD, s, &ev);
        } else if (rc != 0 && !known && errno == EEXIST) {
            rc = ::epoll_ctl(efd, EPOLL_CTL_MOD, s, &ev);
        }
        if (rc == 0) {
            self->watched[s] = events;
        }
        // On failure the transfer still ends by its own timeout (curl's timer covers it);
        // returning an error would make curl abort every transfer of the multi handle.
        return 0;
    } catch (...) {
        return 0;
    }
}

// curl's timer callback: remember when drive() must call curl without socket activity.
int HttpMulti::Impl::on_timer(CURLM* /*multi*/, long timeout_ms, void* userp) {
    auto* self = static_cast<Impl*>(userp);
    if (timeout_ms < 0) {
        self->timer_deadline.reset();
    } else {
        // Clamped so an absurd value cannot overflow the clock arithmetic.
        const long ms = std::min(timeout_ms, kMaxTimerMs);
        self->timer_deadline = SteadyClock::now() + std::chrono::milliseconds(ms);
    }
    return 0;
}

// Body sink with a hard size cap; returning a short count makes curl fail the transfer.
std::size_t HttpMulti::Impl::on_write(char* data, std::size_t size, std::size_t nmemb,
                                      void* userp) {
    auto* t = static_cast<Transfer*>(userp);
    const std::size_t n = size * nmemb;
    try {
        const std::size_t room =
            t->max_response_bytes - std::min(t->max_response_bytes, t->response_body.size());
        if (n > room) {
            t->too_large = true;
            return 0;  // n > 0 here, so 0 != n: CURLE_WRITE_ERROR
        }
        t->response_body.append(data, n);
        return n;
    } catch (...) {
        return 0;  // only append can throw, and only for n > 0
    }
}

// Header sink: keeps the Retry-After of the final response (a new status line resets it).
std::size_t HttpMulti::Impl::on_header(char* data, std::size_t size, std::size_t nmemb,
                                       void* userp) {
    auto* t = static_cast<Transfer*>(userp);
    const std::size_t n = size * nmemb;
    try {
        track_retry_after(std::string_view(data, n), t->retry_after);
        return n;
    } catch (...) {
        return n == 0 ? 1 : 0;
    }
}

// Records a request that could not even be handed to curl, so it still shows up as finished.
void HttpMulti::Impl::fail_immediately(std::uint64_t id, std::string error) {
    HttpResult r;
    r.id = id;
    r.transport_ok = false;
    r.transport_error = std::move(error);
    finished.push_back(std::move(r));
}

// Builds the easy handle with the security and size limits of the spec and adds it to the multi.
std::uint64_t HttpMulti::Impl::start(const HttpRequestSpec& spec) {
    const std::uint64_t id = next_id++;
    auto t = std::make_unique<Transfer>();
    t->id = id;
    t->request_body = spec.body;
    t->max_response_bytes = spec.max_response_bytes;

    t->easy.reset(curl_easy_init());
    if (!t->easy) {
        fail_immediately(id, "cannot create HTTP request (curl_easy_init failed)");
        return id;
    }

    bool has_expect = false;
    bool headers_ok = true;
    for (const std::string& line : spec.headers) {
        has_expect = has_expect || starts_with_ci(line.data(), line.size(), "expect:");
        headers_ok = headers_ok && append_header(t->headers, line.c_str());
    }
    // An empty Expect: stops curl from waiting for "100 Continue" before sending the body.
    if (!has_expect) {
        headers_ok = headers_ok && append_header(t->headers, "Expect:");
    }
    if (!headers_ok) {
        fail_immediately(id, "cannot create HTTP request (out of memory)");
        return id;
    }

    CURL* e = t->easy.get();
    Transfer* raw = t.get();
    const char* protocols = spec.allow_http ? "http,https" : "https";
    CURLcode rc = CURLE_OK;
    // Applies one option unless an earlier one failed; a failed option fails the request
    // (e.g. an unknown CURLOPT_PROTOCOLS_STR must never mean "all protocols allowed").
    auto set = [&](CURLoption opt, auto value) {
        if (rc == CURLE_OK) {
            rc = curl_easy_setopt(e, opt, value);
        }
    };
    set(CURLOPT_PRIVATE, static_cast<void*>(raw));
    set(CURLOPT_ERRORBUFFER, raw->error_buffer.data());
    set(CURLOPT_NOSIGNAL, 1L);
    set(CURLOPT_URL, spec.url.c_str());
    set(CURLOPT_PROTOCOLS_STR, protocols);
    set(CURLOPT_REDIR_PROTOCOLS_STR, protocols);
    set(CURLOPT_FOLLOWLOCATION, 0L);
    if (spec.get) {
        set(CURLOPT_HTTPGET, 1L);
    } else {
        set(CURLOPT_POST, 1L);
        set(CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(raw->request_body.size()));
        set(CURLOPT_POSTFIELDS, raw->request_body.c_str());
    }
    set(CURLOPT_HTTPHEADER, raw->headers.get());
    set(CURLOPT_TIMEOUT_MS, timeout_ms(spec.total_timeout));
    set(CURLOPT_CONNECTTIMEOUT_MS, timeout_ms(spec.connect_timeout));
    set(CURLOPT_SSL_VERIFYPEER, 1L);
    set(CURLOPT_SSL_VERIFYHOST, 2L);
    if (!spec.ca_file.empty()) {
        set(CURLOPT_CAINFO, spec.ca_file.c_str());
    }
    // With a CA directory configured libcurl builds the certificate store anew for every
    // connection (parsing the whole bundle each time); with a CA file alone it caches it.
    // Only when a file is in use: the configured one, or libcurl's built-in bundle.
    if (!spec.ca_file.empty() || curl_version_info(CURLVERSION_NOW)->cainfo != nullptr) {
        set(CURLOPT_CAPATH, static_cast<const char*>(nullptr));
    }
    set(CURLOPT_TCP_KEEPALIVE, 1L);
    set(CURLOPT_SHARE, share.get());
    set(CURLOPT_WRITEFUNCTION, &Impl::on_write);
    set(CURLOPT_WRITEDATA, static_cast<void*>(raw));
    set(CURLOPT_HEADERFUNCTION, &Impl::on_header);
    set(CURLOPT_HEADERDATA, static_cast<void*>(raw));
    if (spec.max_response_bytes > 0 &&
        spec.max_response_bytes <
            static_cast<std::size_t>(std::numeric_limits<curl_off_t>::max())) {
        // Lets curl refuse early when Content-Length already says too much.
        set(CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(spec.max_response_bytes));
    }
    if (rc != CURLE_OK) {
        fail_immediately(id,
                         std::string("cannot configure HTTP request: ") + curl_easy_strerror(rc));
        return id;
    }

    transfers.emplace(id, std::move(t));
    const CURLMcode mrc = curl_multi_add_handle(multi.get(), e);
    if (mrc != CURLM_OK) {
        transfers.erase(id);
        fail_immediately(id, std::string("cannot start HTTP request: ") + curl_multi_strerror(mrc));
    }
    return id;
}

// Calls curl for its timer when the deadline has passed (a 0 ms timer is due at once).
void HttpMulti::Impl::run_timer_if_due() {
    if (!timer_deadline || SteadyClock::now() < *timer_deadline) {
        return;
    }
    timer_deadline.reset();  // curl re-arms it through on_timer if it needs another one
    int running = 0;
    curl_multi_socket_action(multi.get(), CURL_SOCKET_TIMEOUT, 0, &running);
}

// One non-blocking pass: ready sockets, then expired timers, then finished transfers.
void HttpMulti::Impl::drive() {
    std::array<epoll_event, kEpollBatch> events{};
    for (int round = 0; round < kMaxDriveRounds; ++round) {
        const int n = ::epoll_wait(epoll_fd.get(), events.data(), kEpollBatch, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        for (int i = 0; i < n; ++i) {
            const std::uint32_t ev = events[static_cast<std::size_t>(i)].events;
            int bits = 0;
            if ((ev & (EPOLLIN | EPOLLHUP | EPOLLRDHUP)) != 0) {
                bits |= CURL_CSELECT_IN;
            }
            if ((ev & EPOLLOUT) != 0) {
                bits |= CURL_CSELECT_OUT;
            }
            if ((ev & EPOLLERR) != 0) {
                bits |= CURL_CSELECT_ERR;
            }
            int running = 0;
            curl_multi_socket_action(multi.get(), events[static_cast<std::size_t>(i)].data.fd, bits,
                                     &running);
        }
        run_timer_if_due();
        const bool timer_due = timer_deadline && SteadyClock::now() >= *timer_deadline;
        // Stop once the batch was not full and curl asks for nothing more right now; any rest
        // keeps the epoll fd readable (level-triggered) so the caller comes straight back.
        if (n < kEpollBatch && !timer_due) {
            break;
        }
    }
    collect_finished();
}

// Converts curl's outcome of one transfer into an HttpResult without any secret in it.
HttpResult HttpMulti::Impl::make_result(Transfer& t, CURLcode code) {
    HttpResult r;
    r.id = t.id;
    curl_off_t total_us = 0;
    if (curl_easy_getinfo(t.easy.get(), CURLINFO_TOTAL_TIME_T, &total_us) == CURLE_OK) {
        r.elapsed = Micros{static_cast<std::int64_t>(total_us)};
    }
    if (code == CURLE_OK) {
        long status = 0;
        curl_easy_getinfo(t.easy.get(), CURLINFO_RESPONSE_CODE, &status);
        r.transport_ok = true;
        r.status = status;
        r.body = std::move(t.response_body);
        r.retry_after = std::move(t.retry_after);
        return r;
    }
    r.transport_ok = false;
    if (t.too_large || code == CURLE_FILESIZE_EXCEEDED) {
        r.transport_error = "response too large";
        return r;
    }
    r.transport_error = curl_easy_strerror(code);
    const char* detail = t.error_buffer.data();
    const std::size_t detail_len = ::strnlen(detail, t.error_buffer.size());
    if (error_detail_useful(code) && detail_len > 0) {
        r.transport_error += ": ";
        r.transport_error.append(detail, std::min(detail_len, kMaxErrorDetailLength));
    }
    return r;
}

// Moves every transfer curl reports as done out of the multi and into the finished list.
void HttpMulti::Impl::collect_finished() {
    int pending = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi.get(), &pending)) {
        if (msg->msg != CURLMSG_DONE) {
            continue;
        }
        // msg dies with remove_handle: copy what we need first.
        CURL* easy = msg->easy_handle;
        const CURLcode code = msg->data.result;
        void* priv = nullptr;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
        auto* t = static_cast<Transfer*>(priv);
        curl_multi_remove_handle(multi.get(), easy);
        if (t == nullptr) {
            continue;  // not one of ours; cannot happen, but never dereference it
        }
        const auto it = transfers.find(t->id);
        if (it == transfers.end()) {
            continue;
        }
        finished.push_back(make_result(*it->second, code));
        transfers.erase(it);
    }
}

// Creates the engine; throws if libcurl or epoll cannot be set up at all.
HttpMulti::HttpMulti() : impl_(std::make_unique<Impl>()) {}

// Defined here because Impl is incomplete in the header.
HttpMulti::~HttpMulti() = default;

// Public entry: queue a request; failures to start are reported through take_finished().
std::uint64_t HttpMulti::start(const HttpRequestSpec& spec) {
    return impl_->start(spec);
}

// Public entry: the single descriptor the caller's event loop waits on.
int HttpMulti::wait_fd() const {
    return impl_->epoll_fd.get();
}

// Public entry: time until drive() is due without fd activity, rounded up to curl's 1 ms
// granularity so a caller truncating to milliseconds never spins; 0 while results wait.
std::optional<Micros> HttpMulti::next_timeout() const {
    if (!impl_->finished.empty()) {
        return Micros{0};
    }
    if (!impl_->timer_deadline) {
        return std::nullopt;
    }
    const auto left = *impl_->timer_deadline - SteadyClock::now();
    if (left <= SteadyClock::duration::zero()) {
        return Micros{0};
    }
    return std::chrono::ceil<std::chrono::milliseconds>(left);
}

// Public entry: do all ready work without blocking.
void HttpMulti::drive() {
    impl_->drive();
}

// Public entry: hand over results collected so far.
std::vector<HttpResult> HttpMulti::take_finished() {
    std::vector<HttpResult> out;
    out.swap(impl_->finished);
    return out;
}

// Public entry: requests handed to curl and not yet finished.
std::size_t HttpMulti::in_flight() const {
    return impl_->transfers.size();
}

void HttpMulti::set_connection_cache(long n) {
    const long size = std::max(kMaxConnects, n);
    if (size == impl_->connection_cache) return;
    if (curl_multi_setopt(impl_->multi.get(), CURLMOPT_MAXCONNECTS, size) == CURLM_OK) {
        impl_->connection_cache = size;
    }
}

}  // namespace upstream_token
