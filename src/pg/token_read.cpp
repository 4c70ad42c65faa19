// The hot path's read of one token row: a primary-key index scan on the cached relation and
// index, without SPI or the executor (a second executor run per call cost a quarter of a
// get_upstream_token). The relation, index and column numbers are looked up once per backend
// and forgotten on any relcache invalidation of either (DROP / CREATE EXTENSION, ALTER).
#include "pg/prelude.hpp"
#include "pg/token_read.hpp"

extern "C" {
#include "access/genam.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "storage/lmgr.h"
#include "executor/tuptable.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
}

#include "core/error.hpp"
#include "pg/compat.hpp"
#include "pg/guard.hpp"
#include "pg/spi.hpp"

namespace upstream_token::pg {

namespace {

// Where the columns the hot path reads are; valid while `heap` is set.
struct TokenRelation {
    Oid heap = InvalidOid;
    Oid pkey = InvalidOid;
    AttrNumber access = 0, expires_at = 0, status = 0, refresh = 0, generation = 0, id_token = 0,
               issued_at = 0;
};

// Per backend, like PostgreSQL's own relcache entries (and invalidated with them).
TokenRelation& cached_relation() {
    static TokenRelation rel;
    return rel;
}

// Relcache callback: forgets the cached OIDs when either relation (or every relation) changes.
void forget_relation(Datum, Oid relid) {
    TokenRelation& r = cached_relation();
    if (relid == InvalidOid || relid == r.heap || relid == r.pkey) r = TokenRelation{};
}

// Looks the relation, its primary key and its columns up (inside pg_call).
void look_up(TokenRelation& r) {
    static bool registered = false;
    if (!registered) {
        CacheRegisterRelcacheCallback(forget_relation, Datum(0));
        registered = true;
    }
    const Oid nsp = get_namespace_oid("upstream_token", false);
    const Oid heap = get_relname_relid("token", nsp);
    const Oid pkey = get_relname_relid("token_pkey", nsp);
    if (!OidIsValid(heap) || !OidIsValid(pkey)) {
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE),
                        errmsg("upstream_token.token or its primary key is missing")));
    }
    r.access = get_attnum(heap, "access_token");
    r.expires_at = get_attnum(heap, "expires_at");
    r.status = get_attnum(heap, "status");
    r.refresh = get_attnum(heap, "refresh_token");
    r.generation = get_attnum(heap, "generation");
    r.id_token = get_attnum(heap, "id_token");
    r.issued_at = get_attnum(heap, "issued_at");
    r.heap = heap;
    r.pkey = pkey;
}

// A bytea column's bytes (detoasted), or nullopt.
std::optional<std::string> bytea_value(TupleTableSlot* slot, AttrNumber att) {
    if (att <= 0 || slot->tts_isnull[att - 1]) return std::nullopt;
    const Datum v = slot->tts_values[att - 1];
    bytea* b = pg_call([&] { return DatumGetByteaPP(v); });
    return std::string(VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b));
}

// The open scan of one read; closed (through pg_call) however the read ends.
class PkeyScan {
  public:
    PkeyScan() = default;
    PkeyScan(const PkeyScan&) = delete;
    PkeyScan& operator=(const PkeyScan&) = delete;
    ~PkeyScan() {
        try {
            pg_call([&] {
                if (slot != nullptr) ExecDropSingleTupleTableSlot(slot);
                if (scan != nullptr) index_endscan(scan);
                if (registered != nullptr) UnregisterSnapshot(registered);
                // Locks are kept to the end of the transaction, as a query's are.
                if (index != nullptr) index_close(index, NoLock);
                if (heap != nullptr) table_close(heap, NoLock);
            });
        } catch (...) {
            // The transaction's abort releases whatever is left.
        }
    }
    Relation heap = nullptr;
    Relation index = nullptr;
    IndexScanDesc scan = nullptr;
    TupleTableSlot* slot = nullptr;
    Snapshot registered = nullptr;
};

// Opens the relation and its primary key under lock. Taking a lock processes pending
// invalidations: when one of them was for these relations (a DROP / CREATE EXTENSION, a
// REINDEX CONCURRENTLY committed just now), the OIDs and column numbers are looked up again.
TokenRelation open_relation(PkeyScan& s) {
    for (int attempt = 0;; ++attempt) {
        TokenRelation& r = cached_relation();
        if (!OidIsValid(r.heap)) pg_call([&] { look_up(r); });
        const TokenRelation rel = r;
        const bool current = pg_call([&] {
            s.heap = try_table_open(rel.heap, AccessShareLock);
            if (s.heap == nullptr) return false;
            LockRelationOid(rel.pkey, AccessShareLock);
            const TokenRelation& now = cached_relation();
            if (now.heap != rel.heap || now.pkey != rel.pkey) return false;
            s.index = index_open(rel.pkey, NoLock);
            return true;
        });
        if (current) return rel;
        pg_call([&] {
            if (s.heap != nullptr) table_close(s.heap, NoLock);
            s.heap = nullptr;
        });
        cached_relation() = TokenRelation{};
        if (attempt > 0) {
            throw Error(ErrorCode::internal, "upstream_token.token changed during the read");
        }
    }
}

}  // namespace

std::optional<TokenView> read_token_row(std::string_view session, std::string_view provider,
                                        bool latest, bool with_id_token) {
    const Datum keys[2] = {string_to_text_datum(session), string_to_text_datum(provider)};
    PkeyScan s;
    const TokenRelation rel = open_relation(s);  // fixed for this read
    const bool found = pg_call([&] {
        // The calling query's snapshot (as SPI's read-only execution uses); a new one when the
        // caller must see what the engine just committed.
        Snapshot snap = nullptr;
        if (latest) {
            snap = s.registered = RegisterSnapshot(GetLatestSnapshot());
        } else if (ActiveSnapshotSet()) {
            snap = GetActiveSnapshot();
        } else {
            snap = s.registered = RegisterSnapshot(GetTransactionSnapshot());
        }
        ScanKeyData key[2];
        for (int i = 0; i < 2; ++i) {
            ScanKeyEntryInitialize(&key[i], 0, static_cast<AttrNumber>(i + 1),
                                   BTEqualStrategyNumber, InvalidOid, s.index->rd_indcollation[i],
                                   F_TEXTEQ, keys[i]);
        }
        s.scan = compat::index_beginscan(s.heap, s.index, snap, 2, 0);
        index_rescan(s.scan, key, 2, nullptr, 0);
        s.slot = table_slot_create(s.heap, nullptr);
        if (!index_getnext_slot(s.scan, ForwardScanDirection, s.slot)) return false;
        slot_getallattrs(s.slot);
        return true;
    });
    if (!found) return std::nullopt;
    TupleTableSlot* slot = s.slot;
    const auto null = [&](AttrNumber att) { return att <= 0 || slot->tts_isnull[att - 1]; };
    const auto value = [&](AttrNumber att) { return slot->tts_values[att - 1]; };
    TokenView v;
    v.access_ct = bytea_value(slot, rel.access);
    if (with_id_token) v.id_ct = bytea_value(slot, rel.id_token);
    v.expires_at = null(rel.expires_at)
                       ? Time{}
                       : from_timestamptz(DatumGetTimestampTz(value(rel.expires_at)));
    if (!null(rel.issued_at))
        v.issued_at = from_timestamptz(DatumGetTimestampTz(value(rel.issued_at)));
    if (!null(rel.status)) {
        const Datum status = value(rel.status);
        v.status = pg_call([&] { return text_to_cstring(DatumGetTextPP(status)); });
    }
    v.has_refresh_token = !null(rel.refresh);
    v.generation = null(rel.generation) ? 0 : DatumGetInt64(value(rel.generation));
    v.xmin = pg_call([&] {
        bool isnull = false;
        return DatumGetTransactionId(
            slot_getsysattr(slot, MinTransactionIdAttributeNumber, &isnull));
    });
    return v;
}

}  // namespace upstream_token::pg
