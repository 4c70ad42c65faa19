// The encryption key of this backend, read from upstream_token.key_file.
#pragma once

#include <vector>

#include "core/crypto.hpp"

namespace upstream_token::pg {

// The key new ciphertexts are written with; Error(key_unavailable) when none is usable.
const Key& current_key();

// Every key a ciphertext may be opened with: the current one, then the one named by
// upstream_token.previous_key_file while a key rotation is under way.
const std::vector<Key>& known_keys();

}  // namespace upstream_token::pg
