#include "pg/prelude.hpp"
#include "pg/engine_discovery.hpp"

#include <algorithm>
#include <exception>

#include "core/discovery.hpp"
#include "core/error.hpp"
#include "pg/engine_stage.hpp"
#include "pg/gucs.hpp"
#include "pg/spi.hpp"
#include "pg/worker_txn.hpp"

namespace upstream_token::pg {

namespace {

// Keeps a fetched, checked metadata document for the backend that asked (own transaction).
void save_discovery(const std::string& issuer, const std::string& document) {
    WorkerTxn txn;
    static Statement save(
        "INSERT INTO upstream_token.discovery (issuer, document, fetched_at) "
        "VALUES ($1, $2::pg_catalog.jsonb, pg_catalog.now()) ON CONFLICT (issuer) DO UPDATE "
        "SET document = EXCLUDED.document, fetched_at = EXCLUDED.fetched_at");
    save.run({text_arg(issuer), text_arg(document)}, false);
    txn.commit();
}

}  // namespace

void Discovery::answer_error(const DiscoveryRequest& request, const char* message,
                             const char* detail) {
    JobResult bad;
    bad.code = ErrorCode::refresh_failed;
    bad.message = message;
    bad.detail = detail;
    intake_.answer(request.slot, request.request_id, bad);
}

void Discovery::start(const DiscoveryRequest& request) noexcept {
    try {
        Fetch fetch;
        fetch.request = request;
        fetch.urls = metadata_urls(request.issuer, allow_insecure_http());
        fetch_next(std::move(fetch));
    } catch (const Error& e) {
        JobResult bad;
        bad.code = e.code();
        bad.message = e.what();
        intake_.answer(request.slot, request.request_id, bad);
    } catch (const std::exception& e) {
        log_recovered("starting a discovery", e.what());
        answer_error(request, "the engine could not fetch the issuer's metadata", "");
    }
}

// Fetches the next metadata URL of a request.
void Discovery::fetch_next(Fetch fetch) {
    HttpRequestSpec spec;
    spec.url = fetch.urls[fetch.next_url++];
    spec.get = true;
    spec.headers = {"Accept: application/json"};
    spec.total_timeout = request_timeout();
    spec.connect_timeout = std::min(spec.total_timeout, seconds(5));
    spec.ca_file = ca_file();
    spec.allow_http = allow_insecure_http();
    const std::uint64_t id = http_.start(spec);
    fetches_.emplace(id, std::move(fetch));
}

bool Discovery::on_result(const HttpResult& r) noexcept {
    auto it = fetches_.find(r.id);
    if (it == fetches_.end()) return false;
    Fetch fetch = std::move(it->second);
    fetches_.erase(it);
    JobResult result;
    result.code = ErrorCode::refresh_failed;
    try {
        if (!r.transport_ok) {
            result.message = "the issuer's metadata could not be fetched";
            result.detail = r.transport_error;
        } else if ((r.status < 200 || r.status > 299) && fetch.next_url < fetch.urls.size()) {
            fetch_next(std::move(fetch));  // OIDC location failed: try RFC 8414's
            return true;
        } else if (r.status < 200 || r.status > 299) {
            result.message =
                "the issuer publishes no metadata (HTTP " + std::to_string(r.status) + ")";
        } else {
            (void)parse_metadata(r.body, fetch.request.issuer, allow_insecure_http());
            save_discovery(fetch.request.issuer, r.body);
            result.ok = true;
        }
    } catch (const Error& e) {
        abort_worker_transaction();
        result.ok = false;
        result.code = e.code();
        result.message = e.what();
        result.detail = e.detail();
    } catch (const std::exception& e) {
        const std::string what = e.what();  // before the abort frees what it points to
        abort_worker_transaction();
        log_recovered("saving a discovery document", what.c_str());
        result.ok = false;
        result.message = "the engine could not keep the issuer's metadata";
        result.detail = what;
    }
    intake_.answer(fetch.request.slot, fetch.request.request_id, result);
    return true;
}

void Discovery::abandon_all(const char* why) noexcept {
    for (auto& [id, fetch] : fetches_) answer_error(fetch.request, why, "");
    fetches_.clear();
}

}  // namespace upstream_token::pg
