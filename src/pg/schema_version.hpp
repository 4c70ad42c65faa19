// The version of the SQL objects this library is written for. Between an upgrade of the
// library (a server restart) and `ALTER EXTENSION upstream_token UPDATE`, the objects are
// older: reads of stored tokens go on, while writes and refreshes stop with a clear error
// instead of failing on a column or table the old version lacks.
#pragma once

#include <optional>
#include <string>

namespace upstream_token::pg {

inline constexpr const char* kSchemaVersion = "0.3.0";

// The installed version of the extension in this database, if it is installed.
std::optional<std::string> installed_version();

// Raises SQLSTATE 55000 with the fix when the installed objects are not this library's
// version (checked once per transaction).
void require_current_schema();

}  // namespace upstream_token::pg
