// The encryption keys of this process, read from upstream_token.key_file and
// upstream_token.previous_key_file. A key file is known by its path and its content: a file
// overwritten in place is noticed too (its stat identity changes, and a file written less than
// two seconds before it was read is read again).
#pragma once

#include <vector>

#include "core/crypto.hpp"

namespace upstream_token::pg {

// The key new ciphertexts are written with; the key file is checked at the first call of each
// transaction, so a transaction that begins after the file changed seals nothing under the old
// key. Error(key_unavailable) when none is usable.
const Key& current_key();

// Every key a ciphertext may be opened with: the current one, then previous_key_file's while
// a key rotation is under way. The files are checked at most once a second (get_upstream_token
// runs this on every call).
const std::vector<Key>& known_keys();

// Like known_keys(), checking the files now: for a ciphertext naming a key id not in hand.
// Whenever the files are checked, a configuration reload this process was signalled for is
// applied first (the settings may name other files by now).
const std::vector<Key>& known_keys_checked_now();

}  // namespace upstream_token::pg
