// The hot path's read of one token row by primary key, without SPI or the executor.
#pragma once

#include <optional>
#include <string_view>

#include "pg/store.hpp"

namespace upstream_token::pg {

// Reads (session, provider) with the transaction's active snapshot, or with a new one when
// `latest` is set; the provider's threshold is left for the caller. nullopt: no such row.
std::optional<TokenView> read_token_row(std::string_view session, std::string_view provider,
                                        bool latest, bool with_id_token);

}  // namespace upstream_token::pg
