#!/usr/bin/env bash
# Installs what building and testing upstream_token needs, when it is missing.
# Debian 12. The server and its headers are kept at the same version.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
need=()
pg_version=$(dpkg-query -W -f='${Version}' postgresql-15 2>/dev/null || true)
for p in postgresql-15 postgresql-server-dev-15 postgresql-15-pgtap libcurl4-openssl-dev \
         nlohmann-json3-dev libssl-dev libtap-parser-sourcehandler-pgtap-perl libgtest-dev \
         cmake g++ make openssl curl faketime pgbouncer; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
# Node may come from another packaging than Debian's (which ships npm separately).
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
    echo "deps: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    pkgs=()
    for p in "${need[@]}"; do
        # Pin the headers to the installed server so apt does not upgrade one without the other.
        if [ "$p" = postgresql-server-dev-15 ] && [ -n "$pg_version" ]; then
            pkgs+=("$p=$pg_version")
        else
            pkgs+=("$p")
        fi
    done
    apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
if [ ! -d "$here/test/node_modules/pg" ] || [ ! -d "$here/test/node_modules/oidc-provider" ]; then
    echo "deps: installing test node modules"
    (cd "$here/test" && npm ci --no-audit --no-fund --silent)
fi
