// Many HTTP requests in flight from one thread: libcurl's multi interface driven by socket
// events through one epoll descriptor, so a caller with its own event loop (the refresh
// engine's WaitEventSet) waits on a single fd plus a timeout. Connections and TLS sessions
// are reused across requests to the same host.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "time.hpp"

namespace upstream_token {

struct HttpRequestSpec {
    std::string url;
    std::vector<std::string> headers;  // complete header lines
    std::string body;                  // POSTed as is (form-encoded by the caller)
    bool get = false;                  // a GET (body ignored), e.g. for provider metadata
    Micros total_timeout{seconds(10)};
    Micros connect_timeout{seconds(5)};
    std::string ca_file;      // empty: the system bundle
    bool allow_http = false;  // otherwise only https:// is allowed (also no redirects)
    std::size_t max_response_bytes = 1 << 20;
};

struct HttpResult {
    std::uint64_t id = 0;
    bool transport_ok = false;    // false: no HTTP response (connect, TLS, timeout, too big)
    std::string transport_error;  // short description when !transport_ok; no secrets
    long status = 0;
    std::string body;
    std::string retry_after;  // raw Retry-After header value, if any
    Micros elapsed{0};
};

class HttpMulti {
  public:
    HttpMulti();
    ~HttpMulti();
    HttpMulti(const HttpMulti&) = delete;
    HttpMulti& operator=(const HttpMulti&) = delete;

    // Starts the request (a POST unless spec.get); returns its id. Never blocks.
    std::uint64_t start(const HttpRequestSpec& spec);

    // An fd that becomes readable when some transfer needs attention (epoll descriptor).
    int wait_fd() const;

    // How long the caller may sleep before calling drive() even without fd activity;
    // nullopt when nothing is pending.
    std::optional<Micros> next_timeout() const;

    // Does all work that is ready now without blocking (socket events, expired timers).
    void drive();

    // Requests finished since the last call.
    std::vector<HttpResult> take_finished();

    std::size_t in_flight() const;

    // Keeps up to `n` idle connections for reuse (at least 64): below the number of exchanges
    // in flight, finished connections are closed and almost every exchange pays a new TCP and
    // TLS handshake.
    void set_connection_cache(long n);

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace upstream_token
