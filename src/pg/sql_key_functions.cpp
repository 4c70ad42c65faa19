// SQL entry points of key rotation: re-encrypting stored secrets under the current key, a
// batch at a time, while reads keep working with either key.
#include "pg/prelude.hpp"

#include <cstdio>

#include "core/crypto.hpp"
#include "core/error.hpp"
#include "pg/guard.hpp"
#include "pg/keys.hpp"
#include "pg/login_store.hpp"
#include "pg/schema_version.hpp"
#include "pg/secrets.hpp"
#include "pg/spi.hpp"
#include "pg/token_lock.hpp"

namespace upstream_token::pg {
namespace {

// The 4 key-id bytes as they stand in a ciphertext (after the version byte).
std::string key_id_bytes(std::uint32_t id) {
    return std::string{static_cast<char>(id >> 24), static_cast<char>((id >> 16) & 0xff),
                       static_cast<char>((id >> 8) & 0xff), static_cast<char>(id & 0xff)};
}

// Re-seals one stored value under the current key; nullopt stays nullopt.
std::optional<std::string> reseal(const std::string& provider, const std::string& session,
                                  const char* column, const std::optional<std::string>& sealed) {
    const auto plain = open_sealed(provider, session, column, sealed);
    if (!plain) return std::nullopt;
    return seal(provider, session, column, *plain);
}

// Token rows: skips rows a refresh holds (its optimistic UPDATE compares the refresh-token
// ciphertext, which must not change under it: I2) and rows other writers lock.
void reencrypt_tokens(const Arg& current_id, std::int64_t batch) {
    static Statement pick(
        "SELECT session, provider, access_token, refresh_token, id_token "
        "FROM upstream_token.token "
        "WHERE (access_token IS NOT NULL AND substring(access_token FROM 2 FOR 4) <> $1) "
        "   OR (refresh_token IS NOT NULL AND substring(refresh_token FROM 2 FOR 4) <> $1) "
        "   OR (id_token IS NOT NULL AND substring(id_token FROM 2 FOR 4) <> $1) "
        "LIMIT $2 FOR UPDATE SKIP LOCKED");
    struct Row {
        std::string session, provider;
        std::optional<std::string> access, refresh, id;
    };
    std::vector<Row> rows;
    const auto n = pick.run({current_id, int8_arg(batch)}, false);
    for (std::uint64_t i = 0; i < n; ++i) {
        ResultRow r(i);
        rows.push_back(Row{r.text(1).value_or(""), r.text(2).value_or(""), r.bytea(3), r.bytea(4),
                           r.bytea(5)});
    }
    static Statement update(
        "UPDATE upstream_token.token SET access_token = $3, refresh_token = $4, id_token = $5 "
        "WHERE session = $1 AND provider = $2");
    for (const Row& row : rows) {
        if (!lock_token_for_transaction(row.provider, row.session, false)) continue;
        const auto access = reseal(row.provider, row.session, "access_token", row.access);
        const auto refresh = reseal(row.provider, row.session, "refresh_token", row.refresh);
        const auto id = reseal(row.provider, row.session, "id_token", row.id);
        update.run({text_arg(row.session), text_arg(row.provider), bytea_arg(access),
                    bytea_arg(refresh), bytea_arg(id)},
                   false);
    }
}

// Client secrets and queued revocations. A provider row is taken FOR NO KEY UPDATE: a
// transaction storing a token for it holds the row's key share, which must not hold this off.
void reencrypt_others(const Arg& current_id, std::int64_t batch) {
    static Statement providers(
        "SELECT name, client_secret FROM upstream_token.provider "
        "WHERE client_secret IS NOT NULL AND substring(client_secret FROM 2 FOR 4) <> $1 "
        "LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED");
    std::vector<std::pair<std::string, std::optional<std::string>>> secrets;
    for (std::uint64_t i = 0, n = providers.run({current_id, int8_arg(batch)}, false); i < n; ++i) {
        ResultRow r(i);
        secrets.emplace_back(r.text(1).value_or(""), r.bytea(2));
    }
    static Statement set_secret(
        "UPDATE upstream_token.provider SET client_secret = $2 WHERE name = $1");
    for (const auto& [name, sealed] : secrets) {
        set_secret.run({text_arg(name), bytea_arg(reseal(name, "", "client_secret", sealed))},
                       false);
    }
    static Statement queued(
        "SELECT id, provider, session, token_column, token FROM upstream_token.revocation "
        "WHERE substring(token FROM 2 FOR 4) <> $1 LIMIT $2 FOR UPDATE SKIP LOCKED");
    struct Queued {
        std::int64_t id;
        std::string provider, session, column;
        std::optional<std::string> token;
    };
    std::vector<Queued> rows;
    for (std::uint64_t i = 0, n = queued.run({current_id, int8_arg(batch)}, false); i < n; ++i) {
        ResultRow r(i);
        rows.push_back(Queued{r.int8(1).value_or(0), r.text(2).value_or(""), r.text(3).value_or(""),
                              r.text(4).value_or(""), r.bytea(5)});
    }
    static Statement set_token("UPDATE upstream_token.revocation SET token = $2 WHERE id = $1");
    for (const Queued& q : rows) {
        set_token.run(
            {int8_arg(q.id), bytea_arg(reseal(q.provider, q.session, q.column.c_str(), q.token))},
            false);
    }
}

// Pending logins: their PKCE verifier, nonce and device code (sealed for the login's key).
void reencrypt_logins(const Arg& current_id, std::int64_t batch) {
    static Statement pick(
        "SELECT id, provider, code_verifier, nonce, device_code FROM upstream_token.login "
        "WHERE substring(code_verifier FROM 2 FOR 4) <> $1 OR substring(nonce FROM 2 FOR 4) <> $1 "
        "   OR substring(device_code FROM 2 FOR 4) <> $1 "
        "LIMIT $2 FOR UPDATE SKIP LOCKED");
    struct Row {
        std::string id, provider;
        std::optional<std::string> verifier, nonce, device_code;
    };
    std::vector<Row> rows;
    for (std::uint64_t i = 0, n = pick.run({current_id, int8_arg(batch)}, false); i < n; ++i) {
        ResultRow r(i);
        rows.push_back(Row{r.text(1).value_or(""), r.text(2).value_or(""), r.bytea(3), r.bytea(4),
                           r.bytea(5)});
    }
    static Statement update(
        "UPDATE upstream_token.login SET code_verifier = $2, nonce = $3, device_code = $4 "
        "WHERE id = $1");
    for (const Row& row : rows) {
        const std::string aad = login_aad_session(row.id);
        update.run(
            {text_arg(row.id), bytea_arg(reseal(row.provider, aad, "code_verifier", row.verifier)),
             bytea_arg(reseal(row.provider, aad, "nonce", row.nonce)),
             bytea_arg(reseal(row.provider, aad, "device_code", row.device_code))},
            false);
    }
}

// Values still sealed under another key than the current one.
std::int64_t remaining(const Arg& current_id) {
    static Statement count(
        "SELECT (SELECT pg_catalog.count(*) FROM upstream_token.token "
        "         WHERE (access_token IS NOT NULL AND substring(access_token FROM 2 FOR 4) <> $1) "
        "            OR (refresh_token IS NOT NULL AND substring(refresh_token FROM 2 FOR 4) <> "
        "$1) "
        "            OR (id_token IS NOT NULL AND substring(id_token FROM 2 FOR 4) <> $1)) "
        "     + (SELECT pg_catalog.count(*) FROM upstream_token.provider "
        "         WHERE client_secret IS NOT NULL AND substring(client_secret FROM 2 FOR 4) <> $1) "
        "     + (SELECT pg_catalog.count(*) FROM upstream_token.revocation "
        "         WHERE substring(token FROM 2 FOR 4) <> $1) "
        "     + (SELECT pg_catalog.count(*) FROM upstream_token.login "
        "         WHERE substring(code_verifier FROM 2 FOR 4) <> $1 "
        "            OR substring(nonce FROM 2 FOR 4) <> $1 "
        "            OR substring(device_code FROM 2 FOR 4) <> $1)");
    count.run({current_id}, true, 1);
    return ResultRow().int8(1).value_or(0);
}

Datum reencrypt_batch(FunctionCallInfo fcinfo) {
    require_current_schema();
    const std::int64_t batch = PG_ARGISNULL(0) ? 500 : PG_GETARG_INT32(0);
    if (batch <= 0) throw Error(ErrorCode::invalid_parameter, "batch_size must be positive");
    std::int64_t left = 0;
    {
        SpiConnection spi;
        const Arg current_id = bytea_arg(key_id_bytes(current_key().id));
        reencrypt_tokens(current_id, batch);
        reencrypt_others(current_id, batch);
        reencrypt_logins(current_id, batch);
        left = remaining(current_id);
    }
    PG_RETURN_INT64(left);
}

// Waits for every transaction running now to end: one that sealed a value before the key
// changed may commit it after rotate_key's last look (rotate_key looks again afterwards).
Datum wait_for_running_transactions(FunctionCallInfo) {
    int n = 0;
    VirtualTransactionId* running = pg_call([&] {
        return GetCurrentVirtualXIDs(InvalidTransactionId, false, false, PROC_IS_AUTOVACUUM, &n);
    });
    for (int i = 0; i < n; ++i) {
        const VirtualTransactionId vxid = running[i];
        pg_call([&] { (void)VirtualXactLock(vxid, true); });
    }
    PG_RETURN_VOID();
}

Datum current_key_id(FunctionCallInfo) {
    char hex[9];
    std::snprintf(hex, sizeof hex, "%08x", current_key().id);
    return string_to_text_datum(hex);
}

}  // namespace
}  // namespace upstream_token::pg

UT_SQL_ENTRY(ut_reencrypt_batch, upstream_token::pg::reencrypt_batch)
UT_SQL_ENTRY(ut_current_key_id, upstream_token::pg::current_key_id)
UT_SQL_ENTRY(ut_wait_for_running_transactions, upstream_token::pg::wait_for_running_transactions)
