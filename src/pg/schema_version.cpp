#include "pg/prelude.hpp"
#include "pg/schema_version.hpp"

#include "core/error.hpp"
#include "pg/guard.hpp"
#include "pg/spi.hpp"

namespace upstream_token::pg {

std::optional<std::string> installed_version() {
    static Statement q(
        "SELECT extversion FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) "
        "'upstream_token'");
    if (q.run({}, true, 1) == 0) return std::nullopt;
    return ResultRow().text(1);
}

void require_current_schema() {
    // One look per transaction: the version only changes by ALTER EXTENSION, a transaction.
    static TimestampTz checked_in = 0;
    const TimestampTz xact = GetCurrentTransactionStartTimestamp();
    if (checked_in == xact) return;
    SpiConnection spi;
    const auto version = installed_version();
    if (version && *version != kSchemaVersion) {
        throw Error(ErrorCode::extension_outdated,
                    "the upstream_token extension is older than its library",
                    "The installed objects are version " + *version + ", the library is " +
                        kSchemaVersion + ".",
                    "Run ALTER EXTENSION upstream_token UPDATE in this database.");
    }
    checked_in = xact;
}

}  // namespace upstream_token::pg
