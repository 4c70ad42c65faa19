// Discovery: the metadata fetches register_provider_from_issuer asks for (OIDC Discovery,
// then RFC 8414). Each fetch is its own failure domain: a bad document or a failed save
// answers that one request with an error and touches nothing else.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/http_multi.hpp"
#include "pg/engine_intake.hpp"

namespace upstream_token::pg {

class Discovery {
  public:
    Discovery(HttpMulti& http, Intake& intake) : http_(http), intake_(intake) {}

    // Starts the fetch of a request's metadata (or answers it when the issuer is unusable).
    void start(const DiscoveryRequest& request) noexcept;
    // Handles a finished fetch; false when `r` is not one of ours.
    bool on_result(const HttpResult& r) noexcept;
    // Answers every fetch under way (the engine is stopping).
    void abandon_all(const char* why) noexcept;
    std::size_t in_flight() const { return fetches_.size(); }

  private:
    struct Fetch {
        DiscoveryRequest request;
        std::vector<std::string> urls;
        std::size_t next_url = 0;
    };
    void fetch_next(Fetch fetch);
    void answer_error(const DiscoveryRequest& request, const char* message, const char* detail);

    HttpMulti& http_;
    Intake& intake_;
    std::map<std::uint64_t, Fetch> fetches_;  // by HTTP request id
};

}  // namespace upstream_token::pg
