// The SQLSTATE of each core error class (listed for users in docs/errors.md).
#pragma once

#include "core/error.hpp"

namespace upstream_token::pg {

// Maps a core error code to the PostgreSQL SQLSTATE callers branch on.
int sqlstate_of(ErrorCode code) noexcept;

}  // namespace upstream_token::pg
