// Delivering queued revocations (RFC 7009): the engine reads due rows of
// upstream_token.revocation, sends them, and deletes each once the provider confirms.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/http_multi.hpp"
#include "core/time.hpp"

namespace upstream_token::pg {

struct RevocationWork {
    std::int64_t id = 0;
    std::string provider;
    int attempts = 0;
    HttpRequestSpec request;
    std::vector<std::string> secrets;  // what the request carried: redacted from replies
};

// Revocations due now (not in `running`), with their requests built; `next_due` gets the
// earliest later attempt. A row that cannot be sent is postponed with its reason. Runs in its
// own transaction.
std::vector<RevocationWork> due_revocations(const std::set<std::int64_t>& running,
                                            std::size_t limit, std::optional<Time>* next_due,
                                            double unit_random);

// Records the provider's answer: a 2xx deletes the row, anything else schedules a retry
// with backoff. Returns when the retry is due (nullopt when delivered). Own transaction.
std::optional<Time> finish_revocation(const RevocationWork& work, const HttpResult& result,
                                      double unit_random);

}  // namespace upstream_token::pg
