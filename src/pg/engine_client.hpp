// The backend's side of the handoff to the refresh engine: enqueue a request in shared
// memory and wait for its result. The backend never talks to a provider itself.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/error.hpp"

namespace upstream_token::pg {

struct RefreshResult {
    bool ok = false;
    ErrorCode code = ErrorCode::internal;  // when !ok
    std::string message;                   // when !ok; never contains a secret
    std::string detail;
};

// Asks the engine to move (provider, session) past `seen_generation` (or to refresh it in
// any case when `force`) and waits up to upstream_token.wait_timeout. Honours query cancel.
// Throws Error(engine_unavailable) when no engine can serve this database.
// `params` (JSON) carries a grant's parameters for a client-credentials or exchanged token.
RefreshResult request_refresh(std::string_view provider, std::string_view session,
                              std::int64_t seen_generation, bool force,
                              std::string_view params = {});

// Asks the engine to redeem the code of a login (`login_key` names it; `params` holds the
// sealed code and the iss parameter) and waits like request_refresh.
RefreshResult request_login(std::string_view provider, std::string_view login_key,
                            std::string_view params);

// Asks the engine to begin a device login for (provider, session) and waits for the provider's
// device code answer.
RefreshResult request_device_login(std::string_view provider, std::string_view session,
                                   std::string_view params);

// Asks the engine to fetch and check an issuer's metadata (stored in upstream_token.discovery
// when it succeeds) and waits like request_refresh.
RefreshResult request_discovery(std::string_view issuer);

}  // namespace upstream_token::pg
