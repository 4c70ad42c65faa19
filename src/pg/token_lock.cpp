#include "pg/token_lock.hpp"

#include "core/lock_key.hpp"
#include "pg/guard.hpp"

namespace upstream_token::pg {

LOCKTAG token_lock_tag(std::int64_t key) {
    const auto k = static_cast<std::uint64_t>(key);
    LOCKTAG tag;
    SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, static_cast<uint32>(k >> 32U),
                         static_cast<uint32>(k & 0xFFFFFFFFU), kTokenLockClass);
    return tag;
}

bool lock_token_for_transaction(std::string_view provider, std::string_view session, bool wait) {
    LOCKTAG tag = token_lock_tag(token_lock_key(provider, session));
    const LockAcquireResult r =
        pg_call([&] { return LockAcquire(&tag, ExclusiveLock, false, !wait); });
    return r != LOCKACQUIRE_NOT_AVAIL;
}

}  // namespace upstream_token::pg
