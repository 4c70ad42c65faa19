#!/usr/bin/env bash
# make-certs.sh DIR: a throwaway CA and a loopback server certificate for the test IdP.
#
# Creates DIR/ca.pem, DIR/ca.key, DIR/server.pem, DIR/server.key (EC P-256, valid 2 days,
# server SAN DNS:localhost + IP:127.0.0.1, EKU serverAuth). Does nothing when all four
# already exist; a partial set is regenerated as a whole. Certificates are 0644 (libcurl in
# the PostgreSQL backend reads ca.pem as user postgres), keys 0600.
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
dir=$1
mkdir -p "$dir"

# Serialise concurrent callers on the same directory, so a CA and a server key pair from
# two different runs can never be mixed.
exec 9>"$dir/.make-certs.lock"
flock 9

files=(ca.pem ca.key server.pem server.key)
have_all=1
for f in "${files[@]}"; do
    [[ -s "$dir/$f" ]] || have_all=0
done
if [[ $have_all -eq 1 ]]; then
    exit 0
fi

work=$(mktemp -d "$dir/.make-certs.XXXXXX")
trap 'rm -rf "$work"' EXIT
umask 077

# Runs one openssl step quietly, showing its messages only when it fails.
run() {
    "$@" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
}

# The CA: self-signed, may only sign certificates.
run openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$work/ca.key" -out "$work/ca.pem" -days 2 -sha256 \
    -subj "/CN=upstream_token test CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash"

# The server key and a request for it.
run openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$work/server.key" -out "$work/server.csr" \
    -subj "/CN=localhost"

cat >"$work/server.ext" <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF

# The server certificate, signed by the CA (random serial, so reruns never collide).
run openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 2 -sha256 \
    -extfile "$work/server.ext" -out "$work/server.pem"

chmod 0644 "$work/ca.pem" "$work/server.pem"
chmod 0600 "$work/ca.key" "$work/server.key"
for f in "${files[@]}"; do
    mv -f "$work/$f" "$dir/$f"
done
