// Expiry decisions (see expiry.hpp). All arithmetic saturates: absurd provider values end in
// a far-future instant, never in a signed overflow.
#include "core/expiry.hpp"

#include <cstdint>
#include <string>

#include "core/error.hpp"

namespace upstream_token {

namespace {

// 9999-12-31T23:59:59Z: the latest instant any computed expiry is allowed to reach (it is
// also the end of what a PostgreSQL timestamptz can be given in the usual formats).
constexpr Time kFarFuture{seconds(253402300799)};

// to - from for to >= from, exact even where the signed subtraction would overflow.
std::uint64_t distance(Time from, Time to) {
    return static_cast<std::uint64_t>(to.time_since_epoch().count()) -
           static_cast<std::uint64_t>(from.time_since_epoch().count());
}

// now + d for d >= 0, saturating at the far future (or at now, should now lie beyond it).
Time add_clamped(Time now, Micros d) {
    const Time ceiling = now > kFarFuture ? now : kFarFuture;
    if (static_cast<std::uint64_t>(d.count()) > distance(now, ceiling)) {
        return ceiling;
    }
    return now + d;
}

// now + s seconds for s >= 0, without overflowing the seconds-to-microseconds conversion.
Time add_seconds_clamped(Time now, std::int64_t s) {
    const Time ceiling = now > kFarFuture ? now : kFarFuture;
    if (static_cast<std::uint64_t>(s) > distance(now, ceiling) / 1000000U) {
        return ceiling;
    }
    return now + seconds(s);
}

// Rejects a negative lifetime with an error that names which input was wrong.
void require_not_negative(std::int64_t v, const char* what) {
    if (v < 0) {
        throw Error(ErrorCode::invalid_parameter, std::string(what) + " must not be negative");
    }
}

// A refresh-token lifetime counts as stated only when positive: 0 is Keycloak's "no timer"
// (see refresh_expiry). Error(invalid_parameter) for a negative one.
bool stated(std::optional<std::int64_t> s) {
    if (s) require_not_negative(*s, "refresh_expires_in");
    return s && *s > 0;
}

}  // namespace

// Decides fresh / refresh_due / expired in one place so every caller agrees on the boundary.
Freshness classify(Time now, Time expires_at, Micros threshold, bool access_token_empty) {
    if (access_token_empty || now >= expires_at) {
        return Freshness::expired;
    }
    // expires_at > now: the remaining time is positive and computed without overflow.
    const std::uint64_t remaining = distance(now, expires_at);
    if (threshold.count() < 0) {
        return Freshness::fresh;
    }
    return remaining <= static_cast<std::uint64_t>(threshold.count()) ? Freshness::refresh_due
                                                                      : Freshness::fresh;
}

// Turns a response's relative expires_in into the absolute instant stored with the token.
Time access_expiry(Time now, std::optional<std::int64_t> expires_in_s, Micros default_lifetime) {
    if (expires_in_s) {
        require_not_negative(*expires_in_s, "expires_in");
        return add_seconds_clamped(now, *expires_in_s);
    }
    require_not_negative(default_lifetime.count(), "the default access token lifetime");
    return add_clamped(now, default_lifetime);
}

// Gives the refresh token its own lifetime (I8), independent of the access token's.
//
// A refresh_expires_in of 0 is read as "not stated", not "already expired": Keycloak sends 0
// for offline tokens, which do not expire on a timer. Treating it as expired would purge a
// usable refresh token, the one failure this extension exists to prevent.
Time refresh_expiry(Time now, std::optional<std::int64_t> refresh_expires_in_s,
                    std::optional<Micros> provider_ttl, Micros default_ttl) {
    if (refresh_expires_in_s) {
        require_not_negative(*refresh_expires_in_s, "refresh_expires_in");
        if (*refresh_expires_in_s > 0) {
            return add_seconds_clamped(now, *refresh_expires_in_s);
        }
    }
    if (provider_ttl) {
        require_not_negative(provider_ttl->count(), "the provider's refresh token TTL");
        return add_clamped(now, *provider_ttl);
    }
    require_not_negative(default_ttl.count(), "the default refresh token TTL");
    return add_clamped(now, default_ttl);
}

// Names shared with the SQL CHECK constraint on token.refresh_expiry_source.
const char* refresh_expiry_source_name(RefreshExpirySource source) {
    switch (source) {
        case RefreshExpirySource::provider:
            return "provider";
        case RefreshExpirySource::application:
            return "application";
        case RefreshExpirySource::estimate:
            return "estimate";
    }
    return "estimate";
}

// Unknown and NULL read as "estimate": wrongly trusting an estimate loses a session, wrongly
// doubting a stated expiry costs one refused refresh.
RefreshExpirySource parse_refresh_expiry_source(const std::optional<std::string_view>& name) {
    if (name && *name == "provider") return RefreshExpirySource::provider;
    if (name && *name == "application") return RefreshExpirySource::application;
    return RefreshExpirySource::estimate;
}

// Records whether the application stated the lifetime, so it is a cut-off only then.
RefreshExpiry login_refresh_expiry(Time now, std::optional<std::int64_t> stated_s,
                                   std::optional<Micros> provider_ttl, Micros default_ttl) {
    const RefreshExpirySource source =
        stated(stated_s) ? RefreshExpirySource::application : RefreshExpirySource::estimate;
    return RefreshExpiry{refresh_expiry(now, stated_s, provider_ttl, default_ttl), source};
}

// Decides what a successful refresh does to the stored refresh-token expiry.
std::optional<RefreshExpiry> refreshed_refresh_expiry(Time now,
                                                      std::optional<std::int64_t> stated_s,
                                                      bool rotated, RefreshExpirySource current,
                                                      std::optional<Micros> provider_ttl,
                                                      Micros default_ttl) {
    if (stated(stated_s)) {
        return RefreshExpiry{add_seconds_clamped(now, *stated_s), RefreshExpirySource::provider};
    }
    if (!rotated && current != RefreshExpirySource::estimate) return std::nullopt;
    return RefreshExpiry{refresh_expiry(now, std::nullopt, provider_ttl, default_ttl),
                         RefreshExpirySource::estimate};
}

// The one place that decides whether a refresh token's lifetime forbids sending it (I8).
bool refresh_token_past_end(Time now, Time refresh_expires_at, RefreshExpirySource source) {
    return source != RefreshExpirySource::estimate && now >= refresh_expires_at;
}

}  // namespace upstream_token
