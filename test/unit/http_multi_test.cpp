// Unit tests of the libcurl multi wrapper (src/core/http_multi.cpp) against a small HTTP/1.1
// server that runs inside the test process on 127.0.0.1 (plain HTTP, allow_http = true).
#include "core/http_multi.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace upstream_token {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// A request as the server saw it.
struct SeenRequest {
    std::string method;
    std::string target;
    std::map<std::string, std::string> headers;  // lower-case names
    std::string body;
    int connection = 0;  // 1-based number of the TCP connection it came on
};

// What the server answers; hang = read on but never answer.
struct Reply {
    int status = 200;
    std::vector<std::string> headers;
    std::string body;
    bool hang = false;
    bool close_delimited = false;  // no Content-Length: the body ends when the server closes
};

// Lower-cases ASCII so header names compare case-insensitively.
std::string lower(std::string s) {
    for (char& c : s) {
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    return s;
}

// Writes all of data, giving up when the peer is gone.
bool send_all(int fd, const std::string& data) {
    std::size_t off = 0;
    while (off < data.size()) {
        const ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
        if (n <= 0) {
            return false;
        }
        off += static_cast<std::size_t>(n);
    }
    return true;
}

// Minimal threaded HTTP/1.1 server (keep-alive, Content-Length bodies) that records every
// request and connection so tests can check what the client really sent.
class TestServer {
  public:
    using Handler = std::function<Reply(const SeenRequest&)>;

    // Listens on an ephemeral 127.0.0.1 port and starts accepting at once.
    explicit TestServer(Handler handler) : handler_(std::move(handler)) {
        listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        EXPECT_GE(listen_fd_, 0);
        const int one = 1;
        ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        addr.sin_port = 0;
        EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
        EXPECT_EQ(::listen(listen_fd_, 128), 0);
        socklen_t len = sizeof addr;
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
        port_ = ntohs(addr.sin_port);
        EXPECT_EQ(::pipe2(stop_pipe_, O_CLOEXEC), 0);
        acceptor_ = std::thread([this] { accept_loop(); });
    }

    // Stops accepting, wakes every connection thread and joins them all.
    ~TestServer() {
        const char b = 'x';
        (void)!::write(stop_pipe_[1], &b, 1);
        acceptor_.join();
        {
            std::lock_guard<std::mutex> lock(mu_);
            for (const int fd : open_fds_) {
                ::shutdown(fd, SHUT_RDWR);
            }
        }
        for (std::thread& t : workers_) {
            t.join();
        }
        ::close(listen_fd_);
        ::close(stop_pipe_[0]);
        ::close(stop_pipe_[1]);
    }

    TestServer(const TestServer&) = delete;
    TestServer& operator=(const TestServer&) = delete;

    // Base URL of this server.
    std::string url(const std::string& path = "/token") const {
        return "http://127.0.0.1:" + std::to_string(port_) + path;
    }
    int port() const { return port_; }
    int connections() const { return connections_.load(); }
    // Snapshot of the requests seen so far.
    std::vector<SeenRequest> requests() const {
        std::lock_guard<std::mutex> lock(mu_);
        return requests_;
    }

  private:
    // Accepts until the stop pipe is written; one thread per connection.
    void accept_loop() {
        for (;;) {
            pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}};
            if (::poll(fds, 2, -1) < 0) {
                continue;
            }
            if (fds[1].revents != 0) {
                return;
            }
            const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
            if (fd < 0) {
                continue;
            }
            const int number = ++connections_;
            std::lock_guard<std::mutex> lock(mu_);
            open_fds_.insert(fd);
            workers_.emplace_back([this, fd, number] { serve(fd, number); });
        }
    }

    // Serves requests on one connection until the peer closes or the server stops.
    void serve(int fd, int number) {
        std::string buf;
        char chunk[16384];
        // Reads more bytes into buf; false at EOF/error.
        auto fill = [&]() {
            const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
            if (n <= 0) {
                return false;
            }
            buf.append(chunk, static_cast<std::size_t>(n));
            return true;
        };
        for (;;) {
            std::size_t end = std::string::npos;
            while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
                if (!buf.empty() && !std::isupper(static_cast<unsigned char>(buf[0]))) {
                    break;  // not HTTP (e.g. a TLS ClientHello)
                }
                if (!fill()) {
                    finish(fd);
                    return;
                }
            }
            if (end == std::string::npos) {
                send_all(fd,
                         "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                         "Connection: close\r\n\r\n");
                finish(fd);
                return;
            }
            SeenRequest req;
            req.connection = number;
            const std::string head = buf.substr(0, end);
            buf.erase(0, end + 4);
            std::size_t line_end = head.find("\r\n");
            const std::string request_line = head.substr(0, line_end);
            const std::size_t sp1 = request_line.find(' ');
            const std::size_t sp2 = request_line.find(' ', sp1 + 1);
            req.method = request_line.substr(0, sp1);
            req.target = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
            while (line_end != std::string::npos) {
                const std::size_t start = line_end + 2;
                line_end = head.find("\r\n", start);
                const std::string line = head.substr(start, line_end - start);
                const std::size_t colon = line.find(':');
                if (colon == std::string::npos) {
                    continue;
                }
                std::size_t v = colon + 1;
                while (v < line.size() && line[v] == ' ') {
                    ++v;
                }
                req.headers[lower(line.substr(0, colon))] = line.substr(v);
            }
            std::size_t length = 0;
            if (req.headers.count("content-length") != 0) {
                length = std::stoul(req.headers["content-length"]);
            }
            while (buf.size() < length) {
                if (!fill()) {
                    finish(fd);
                    return;
                }
            }
            req.body = buf.substr(0, length);
            buf.erase(0, length);
            {
                std::lock_guard<std::mutex> lock(mu_);
                requests_.push_back(req);
            }
            const Reply reply = handler_(req);
            if (reply.hang) {
                while (fill()) {
                }
                finish(fd);
                return;
            }
            std::string out = "HTTP/1.1 " + std::to_string(reply.status) + " X\r\n";
            for (const std::string& h : reply.headers) {
                out += h + "\r\n";
            }
            if (reply.close_delimited) {
                out += "Connection: close\r\n";
            } else {
                out += "Content-Length: " + std::to_string(reply.body.size()) + "\r\n";
            }
            out += "\r\n" + reply.body;
            if (!send_all(fd, out) || reply.close_delimited) {
                finish(fd);
                return;
            }
        }
    }

    // Forgets and closes a connection (under the lock, so the destructor never shuts down a
    // descriptor number that was already reused).
    void finish(int fd) {
        std::lock_guard<std::mutex> lock(mu_);
        open_fds_.erase(fd);
        ::close(fd);
    }

    Handler handler_;
    int listen_fd_ = -1;
    int port_ = 0;
    int stop_pipe_[2] = {-1, -1};
    std::atomic<int> connections_{0};
    mutable std::mutex mu_;
    std::set<int> open_fds_;
    std::vector<std::thread> workers_;
    std::vector<SeenRequest> requests_;
    std::thread acceptor_;
};

// Result of driving the multi handle the way the worker does.
struct Driven {
    std::vector<HttpResult> results;
    Clock::duration longest_drive{};
};

// The worker's loop in miniature: poll() on wait_fd() with next_timeout(), then drive(), until
// `want` results arrived or the deadline passed. Records the longest single drive() call.
Driven drive_until(HttpMulti& http, std::size_t want, milliseconds limit = milliseconds(10000)) {
    Driven out;
    const Clock::time_point deadline = Clock::now() + limit;
    while (out.results.size() < want) {
        const Clock::time_point now = Clock::now();
        if (now >= deadline) {
            break;
        }
        auto wait = std::chrono::ceil<milliseconds>(deadline - now);
        if (const std::optional<Micros> t = http.next_timeout()) {
            wait = std::min(wait, std::chrono::ceil<milliseconds>(*t));
        }
        pollfd p{http.wait_fd(), POLLIN, 0};
        ::poll(&p, 1, static_cast<int>(wait.count()));
        const Clock::time_point before = Clock::now();
        http.drive();
        out.longest_drive = std::max(out.longest_drive, Clock::now() - before);
        for (HttpResult& r : http.take_finished()) {
            out.results.push_back(std::move(r));
        }
    }
    return out;
}

// A request to the test server with plain HTTP allowed.
HttpRequestSpec spec_for(const std::string& url, std::string body = "grant_type=x") {
    HttpRequestSpec spec;
    spec.url = url;
    spec.body = std::move(body);
    spec.allow_http = true;
    spec.total_timeout = seconds(5);
    spec.connect_timeout = seconds(2);
    return spec;
}

// Generous bound for "did not block": a blocking call would take the full transfer timeout.
constexpr milliseconds kNonBlocking{200};

// Echo handler: 200 with the request body.
Reply echo(const SeenRequest& req) {
    Reply r;
    r.body = req.body;
    return r;
}

TEST(HttpMulti, IdleObjectHasNothingPending) {
    HttpMulti http;
    EXPECT_GE(http.wait_fd(), 0);
    EXPECT_FALSE(http.next_timeout().has_value());
    EXPECT_EQ(http.in_flight(), 0U);
    http.drive();
    EXPECT_TRUE(http.take_finished().empty());
}

TEST(HttpMulti, PostBodyAndHeadersArriveAsSent) {
    TestServer server([](const SeenRequest&) {
        Reply r;
        r.status = 201;
        r.headers = {"Content-Type: application/json"};
        r.body = R"({"access_token":"abc"})";
        return r;
    });
    HttpMulti http;
    // Longer than curl's 100-continue threshold, with bytes that need exact transport.
    std::string body = "grant_type=refresh_token&refresh_token=r%2Bt%3D%3D&pad=";
    body += std::string(3000, 'z');
    HttpRequestSpec spec = spec_for(server.url("/oauth/token?x=1"), body);
    spec.headers = {"Content-Type: application/x-www-form-urlencoded",
                    "Authorization: Basic Y2xpZW50OnNlY3JldA==", "Accept: application/json"};

    const std::uint64_t id = http.start(spec);
    EXPECT_EQ(http.in_flight(), 1U);
    const Driven d = drive_until(http, 1);

    ASSERT_EQ(d.results.size(), 1U);
    const HttpResult& r = d.results[0];
    EXPECT_EQ(r.id, id);
    EXPECT_TRUE(r.transport_ok) << r.transport_error;
    EXPECT_EQ(r.status, 201);
    EXPECT_EQ(r.body, R"({"access_token":"abc"})");
    EXPECT_TRUE(r.retry_after.empty());
    EXPECT_GT(r.elapsed.count(), 0);
    EXPECT_LT(d.longest_drive, kNonBlocking);
    EXPECT_EQ(http.in_flight(), 0U);

    const std::vector<SeenRequest> seen = server.requests();
    ASSERT_EQ(seen.size(), 1U);
    EXPECT_EQ(seen[0].method, "POST");
    EXPECT_EQ(seen[0].target, "/oauth/token?x=1");
    EXPECT_EQ(seen[0].body, body);
    EXPECT_EQ(seen[0].headers.at("content-type"), "application/x-www-form-urlencoded");
    EXPECT_EQ(seen[0].headers.at("authorization"), "Basic Y2xpZW50OnNlY3JldA==");
    EXPECT_EQ(seen[0].headers.at("accept"), "application/json");
    EXPECT_EQ(seen[0].headers.at("content-length"), std::to_string(body.size()));
    EXPECT_EQ(seen[0].headers.count("expect"), 0U);
}

TEST(HttpMulti, ErrorStatusIsATransportSuccess) {
    TestServer server([](const SeenRequest&) {
        Reply r;
        r.status = 400;
        r.body = R"({"error":"invalid_grant"})";
        return r;
    });
    HttpMulti http;
    http.start(spec_for(server.url()));
    const Driven d = drive_until(http, 1);
    ASSERT_EQ(d.results.size(), 1U);
    EXPECT_TRUE(d.results[0].transport_ok);
    EXPECT_EQ(d.results[0].status, 400);
    EXPECT_EQ(d.results[0].body, R"({"error":"invalid_grant"})");
}

TEST(HttpMulti, CapturesRetryAfter) {
    TestServer server([](const SeenRequest& req) {
        Reply r;
        if (req.body == "limited") {
            r.status = 429;
            r.headers = {"reTRY-after:   120  "};
        } else {
            r.status = 503;
            r.headers = {"Retry-After: Wed, 21 Oct 2015 07:28:00 GMT"};
        }
        return r;
    });
    HttpMulti http;
    const std::uint64_t a = http.start(spec_for(server.url(), "limited"));
    const std::uint64_t b = http.start(spec_for(server.url(), "down"));
    const Driven d = drive_until(http, 2);
    ASSERT_EQ(d.results.size(), 2U);
    for (const HttpResult& r : d.results) {
        ASSERT_TRUE(r.transport_ok) << r.transport_error;
        if (r.id == a) {
            EXPECT_EQ(r.status, 429);
            EXPECT_EQ(r.retry_after, "120");
        } else {
            EXPECT_EQ(r.id, b);
            EXPECT_EQ(r.status, 503);
            EXPECT_EQ(r.retry_after, "Wed, 21 Oct 2015 07:28:00 GMT");
        }
    }
}

TEST(HttpMulti, FiftyConcurrentRequestsAllFinish) {
    TestServer server(echo);
    HttpMulti http;
    constexpr int kCount = 50;
    std::map<std::uint64_t, std::string> expected;
    const Clock::time_point before_start = Clock::now();
    for (int i = 0; i < kCount; ++i) {
        const std::string body = "request=" + std::to_string(i);
        expected[http.start(spec_for(server.url(), body))] = body;
    }
    EXPECT_LT(Clock::now() - before_start, kNonBlocking);
    EXPECT_EQ(expected.size(), static_cast<std::size_t>(kCount));  // distinct ids
    EXPECT_EQ(http.in_flight(), static_cast<std::size_t>(kCount));

    const Driven d = drive_until(http, kCount);

    ASSERT_EQ(d.results.size(), static_cast<std::size_t>(kCount));
    EXPECT_LT(d.longest_drive, kNonBlocking);
    for (const HttpResult& r : d.results) {
        ASSERT_EQ(expected.count(r.id), 1U) << r.id;
        EXPECT_TRUE(r.transport_ok) << r.transport_error;
        EXPECT_EQ(r.status, 200);
        EXPECT_EQ(r.body, expected[r.id]);
        expected.erase(r.id);
    }
    EXPECT_TRUE(expected.empty());
    EXPECT_EQ(http.in_flight(), 0U);
    EXPECT_FALSE(http.next_timeout().has_value());  // curl deleted its timer: nothing pending
    EXPECT_EQ(server.requests().size(), static_cast<std::size_t>(kCount));
}

TEST(HttpMulti, ReusesConnectionForSequentialRequests) {
    TestServer server(echo);
    HttpMulti http;
    constexpr int kCount = 5;
    for (int i = 0; i < kCount; ++i) {
        http.start(spec_for(server.url(), "n=" + std::to_string(i)));
        const Driven d = drive_until(http, 1);
        ASSERT_EQ(d.results.size(), 1U);
        ASSERT_TRUE(d.results[0].transport_ok) << d.results[0].transport_error;
        EXPECT_EQ(d.results[0].body, "n=" + std::to_string(i));
    }
    EXPECT_EQ(server.requests().size(), static_cast<std::size_t>(kCount));
    EXPECT_LT(server.connections(), kCount);
    EXPECT_EQ(server.connections(), 1);
}

TEST(HttpMulti, ResponseLargerThanLimitFails) {
    TestServer server([](const SeenRequest& req) {
        Reply r;
        r.body = std::string(req.body == "exact" ? 1000 : 5000, 'b');
        r.close_delimited = req.body == "no-length";
        return r;
    });
    HttpMulti http;
    std::map<std::uint64_t, std::string> kind;
    for (const char* body : {"with-length", "no-length", "exact"}) {
        HttpRequestSpec spec = spec_for(server.url(), body);
        spec.max_response_bytes = 1000;
        kind[http.start(spec)] = body;
    }
    const Driven d = drive_until(http, 3);
    ASSERT_EQ(d.results.size(), 3U);
    for (const HttpResult& r : d.results) {
        if (kind[r.id] == "exact") {
            EXPECT_TRUE(r.transport_ok) << r.transport_error;
            EXPECT_EQ(r.body.size(), 1000U);
        } else {
            EXPECT_FALSE(r.transport_ok) << kind[r.id];
            EXPECT_EQ(r.transport_error, "response too large") << kind[r.id];
            EXPECT_TRUE(r.body.empty());
        }
    }
}

TEST(HttpMulti, ServerThatNeverAnswersTimesOut) {
    TestServer server([](const SeenRequest&) {
        Reply r;
        r.hang = true;
        return r;
    });
    HttpMulti http;
    HttpRequestSpec spec = spec_for(server.url());
    spec.total_timeout = Micros{300000};
    const Clock::time_point start = Clock::now();
    http.start(spec);
    const Driven d = drive_until(http, 1, milliseconds(5000));
    const Clock::duration took = Clock::now() - start;

    ASSERT_EQ(d.results.size(), 1U);
    EXPECT_FALSE(d.results[0].transport_ok);
    EXPECT_NE(d.results[0].transport_error.find("Timeout"), std::string::npos)
        << d.results[0].transport_error;
    EXPECT_GE(took, milliseconds(250));
    EXPECT_LT(took, milliseconds(1000));
    EXPECT_LT(d.longest_drive, kNonBlocking);
    EXPECT_EQ(server.requests().size(), 1U);  // it really reached the server
}

TEST(HttpMulti, ConnectionRefusedFails) {
    // A bound socket that never listens: connecting to its port is refused.
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    const int port = ntohs(addr.sin_port);

    HttpMulti http;
    http.start(spec_for("http://127.0.0.1:" + std::to_string(port) + "/token"));
    const Driven d = drive_until(http, 1, milliseconds(5000));
    ::close(fd);

    ASSERT_EQ(d.results.size(), 1U);
    EXPECT_FALSE(d.results[0].transport_ok);
    EXPECT_NE(d.results[0].transport_error.find("connect"), std::string::npos)
        << d.results[0].transport_error;
    EXPECT_EQ(d.results[0].status, 0);
}

TEST(HttpMulti, HttpsToPlainHttpPortFails) {
    TestServer server(echo);
    HttpMulti http;
    HttpRequestSpec spec = spec_for("https://127.0.0.1:" + std::to_string(server.port()) + "/t");
    spec.allow_http = false;
    const Clock::time_point start = Clock::now();
    http.start(spec);
    const Driven d = drive_until(http, 1, milliseconds(5000));

    ASSERT_EQ(d.results.size(), 1U);
    EXPECT_FALSE(d.results[0].transport_ok);
    EXPECT_FALSE(d.results[0].transport_error.empty());
    EXPECT_LT(Clock::now() - start, milliseconds(2000));  // the TLS failure, not the timeout
    EXPECT_TRUE(server.requests().empty());
}

TEST(HttpMulti, PlainHttpIsRefusedUnlessAllowed) {
    TestServer server(echo);
    HttpMulti http;
    HttpRequestSpec spec = spec_for(server.url());
    spec.allow_http = false;
    const Clock::time_point start = Clock::now();
    http.start(spec);
    const Driven d = drive_until(http, 1, milliseconds(5000));

    ASSERT_EQ(d.results.size(), 1U);
    EXPECT_FALSE(d.results[0].transport_ok);
    EXPECT_NE(d.results[0].transport_error.find("protocol"), std::string::npos)
        << d.results[0].transport_error;
    EXPECT_LT(Clock::now() - start, kNonBlocking);
    EXPECT_LT(d.longest_drive, kNonBlocking);
    EXPECT_EQ(server.connections(), 0);
}

TEST(HttpMulti, OtherSchemesAreRefusedEvenWithHttpAllowed) {
    HttpMulti http;
    HttpRequestSpec spec = spec_for("ftp://127.0.0.1:1/x");
    http.start(spec);
    const Driven d = drive_until(http, 1, milliseconds(5000));
    ASSERT_EQ(d.results.size(), 1U);
    EXPECT_FALSE(d.results[0].transport_ok);
    EXPECT_NE(d.results[0].transport_error.find("protocol"), std::string::npos)
        << d.results[0].transport_error;
}

TEST(HttpMulti, RedirectIsNotFollowed) {
    TestServer server([](const SeenRequest&) {
        Reply r;
        r.status = 302;
        r.headers = {"Location: /elsewhere"};
        return r;
    });
    HttpMulti http;
    http.start(spec_for(server.url()));
    const Driven d = drive_until(http, 1);
    ASSERT_EQ(d.results.size(), 1U);
    EXPECT_TRUE(d.results[0].transport_ok);
    EXPECT_EQ(d.results[0].status, 302);
    EXPECT_EQ(server.requests().size(), 1U);
}

TEST(HttpMulti, TimerIsDueRightAfterStart) {
    TestServer server(echo);
    HttpMulti http;
    http.start(spec_for(server.url()));
    // curl asks for an immediate call (timer 0): the caller must not sleep before drive().
    const std::optional<Micros> t = http.next_timeout();
    ASSERT_TRUE(t.has_value());
    EXPECT_EQ(t->count(), 0);
    const Driven d = drive_until(http, 1);
    ASSERT_EQ(d.results.size(), 1U);
    EXPECT_TRUE(d.results[0].transport_ok);
}

TEST(HttpMulti, DestructorCleansUpInFlightTransfers) {
    TestServer server([](const SeenRequest&) {
        Reply r;
        r.hang = true;
        return r;
    });
    {
        HttpMulti http;
        for (int i = 0; i < 5; ++i) {
            http.start(spec_for(server.url()));
        }
        // Drive until every request reached the server, then drop the object mid-transfer.
        const Clock::time_point deadline = Clock::now() + milliseconds(5000);
        while (server.requests().size() < 5 && Clock::now() < deadline) {
            pollfd p{http.wait_fd(), POLLIN, 0};
            ::poll(&p, 1, 10);
            http.drive();
        }
        EXPECT_EQ(server.requests().size(), 5U);
        EXPECT_EQ(http.in_flight(), 5U);
    }
    // The server's threads see the connections close; its destructor joins them.
    SUCCEED();
}

}  // namespace
}  // namespace upstream_token

namespace upstream_token {
namespace {

// Provider metadata is fetched with a GET that carries no body.
TEST(HttpMulti, GetSendsNoBody) {
    TestServer server([](const SeenRequest&) {
        Reply r;
        r.status = 200;
        r.body = R"({"issuer":"x"})";
        return r;
    });
    HttpMulti http;
    HttpRequestSpec spec = spec_for(server.url("/.well-known/openid-configuration"), "ignored");
    spec.get = true;
    http.start(spec);
    const Driven d = drive_until(http, 1);
    ASSERT_EQ(d.results.size(), 1U);
    EXPECT_TRUE(d.results[0].transport_ok) << d.results[0].transport_error;
    EXPECT_EQ(d.results[0].body, R"({"issuer":"x"})");
    const std::vector<SeenRequest> seen = server.requests();
    ASSERT_EQ(seen.size(), 1U);
    EXPECT_EQ(seen[0].method, "GET");
    EXPECT_TRUE(seen[0].body.empty());
}

}  // namespace
}  // namespace upstream_token
