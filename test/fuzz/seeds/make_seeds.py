#!/usr/bin/env python3
"""Writes the hand-made seed inputs of the fuzz targets into test/fuzz/corpus/<target>/.

Realistic provider answers, ID tokens, metadata documents, key files and header blocks, plus
the odd cases issue 9 names. Run once before a first fuzz run; scripts/fuzz.sh with
UT_FUZZ_MERGE=1 then keeps a minimised corpus. File names are content hashes."""
import base64
import hashlib
import json
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'corpus')
STATUS = {200: 0, 201: 1, 400: 4, 401: 5, 403: 6, 429: 8, 500: 9, 503: 10, 302: 11}


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'seed-' + hashlib.sha1(data).hexdigest()[:16]), 'wb') as f:
        f.write(data)


def b64(obj):
    raw = obj if isinstance(obj, bytes) else json.dumps(obj, separators=(',', ':')).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b'=').decode()


AT = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln'
RT = 'Vn3kqV1K0c8d2QmHhZx5Jw9y8T3e6R4a7u0o1i2p3A'
claims = {'iss': 'https://idp.example/realms/main', 'sub': '248289761001', 'aud': 'app',
          'azp': 'app', 'exp': 1700003600, 'iat': 1700000000, 'auth_time': 1699990000,
          'nonce': 'n-0S6_WzA2Mj'}
IDT = b64({'alg': 'RS256', 'kid': 'k1'}) + '.' + b64(claims) + '.' + 'c2lnbmF0dXJl'

# ---- token_response: status byte + body
ok = [
    {'access_token': AT, 'token_type': 'Bearer', 'expires_in': 3600, 'refresh_token': RT,
     'scope': 'openid email', 'id_token': IDT},
    {'access_token': AT, 'expires_in': 300, 'refresh_expires_in': 1800, 'refresh_token': RT,
     'token_type': 'Bearer', 'not-before-policy': 0, 'session_state': 'a1b2', 'scope': 'openid'},
    {'access_token': AT, 'expires_in': '3600', 'token_type': 'bearer'},
    {'access_token': AT, 'refresh_token_expires_in': 15724800, 'refresh_token': RT,
     'scope': ['repo', 'user'], 'token_type': 'bearer'},
    {'access_token': AT, 'ext_expires_in': 3599, 'expires_in': 3599.0, 'token_type': 'Bearer'},
    {'access_token': AT},
]
for body in ok:
    put('token_response', bytes([STATUS[200]]) + json.dumps(body).encode())
odd = ['""', '-5', '"3600.0"', 'null', '[3600]', 'true', '{}', '"1h"', '1e400', '-1e400',
       '99999999999999999999999', '3599.7', '" 3.6e3 "', '"+5"']
for v in odd:
    put('token_response', bytes([STATUS[200]]) +
        ('{"access_token":"%s","refresh_token":"%s","expires_in":%s}' % (AT, RT, v)).encode())
for f, v in [('scope', '42'), ('scope', '[1,"openid"]'), ('token_type', '7'), ('id_token', '5'),
             ('refresh_token', '{"x":1}'), ('refresh_expires_in', 'false'),
             ('refresh_token_expires_in', '""')]:
    put('token_response', bytes([STATUS[200]]) +
        ('{"access_token":"%s","%s":%s}' % (AT, f, v)).encode())
put('token_response', bytes([STATUS[200]]) + b'{"access_token":"a","scope":"caf\xe9","x":"\t"}')
put('token_response', bytes([STATUS[200]]) + b'{"access_token":"a\xff","refresh_token":"r"}')
put('token_response', bytes([STATUS[200]]) + b'{"access_token":"abc","token_type":"Bearer","expires_in":36')
put('token_response', bytes([STATUS[200]]) + b'{"error":"invalid_grant","error_description":"expired"}')
put('token_response', bytes([STATUS[200]]) + b'{"error":"bad_refresh_token"}')
put('token_response', bytes([STATUS[400]]) +
    b'{"error":"invalid_grant","error_description":"Token is not active"}')
put('token_response', bytes([STATUS[400]]) +
    ('{"error":"invalid_grant","error_description":"refresh token %s is expired"}' % RT).encode())
put('token_response', bytes([STATUS[401]]) + b'{"error":"invalid_client"}')
put('token_response', bytes([STATUS[400]]) + b'{"error":"temporarily_unavailable"}')
put('token_response', bytes([STATUS[400]]) + b'{"error":"invalid_grant","error_description":"expir\xe9"}')
put('token_response', bytes([STATUS[503]]) + b'<html><body>Service Unavailable</body></html>')
put('token_response', bytes([STATUS[429]]) + b'{"error":"slow_down"}')
put('token_response', bytes([STATUS[302]]) + b'')

# ---- id_token: mode byte (0 raw JWT, 1 payload JSON, 2 stored claims) + text
put('id_token', b'\x00' + IDT.encode())
put('id_token', b'\x00' + (b64({'alg': 'none'}) + '.' + b64(claims) + '.').encode())
put('id_token', b'\x00' + (b64({'alg': 'HS256'}) + '.' + b64(dict(claims, aud=['app', 'api'])) + '.c2ln').encode())
put('id_token', b'\x00' + b'a.b.c.d.e')
put('id_token', b'\x00' + (b64({'alg': 'RS256'}) + '.' + b64(claims) + '==.c2ln').encode())
for c in [claims, dict(claims, aud=['a', 'b', 'a']), dict(claims, auth_time=1.7e9),
          dict(claims, auth_time=18446744073709551615), dict(claims, azp=None),
          {'iss': 'x', 'sub': '', 'aud': 'a'}, {'iss': 'x', 'sub': 'y', 'aud': []},
          {'iss': 'x', 'sub': 'y', 'aud': [1]}, {'iss': 'x', 'sub': 'y', 'aud': 'a', 'auth_time': '1'}]:
    put('id_token', b'\x01' + json.dumps(c).encode())
put('id_token', b'\x02' + json.dumps({'iss': claims['iss'], 'sub': claims['sub'], 'aud': ['app'],
                                      'azp': 'app', 'auth_time': 1699990000}).encode())
put('id_token', b'\x02' + b'{"iss":"i","sub":"s","aud":["a"]}')

# ---- discovery: flags byte (1 allow_http, 2 expected issuer = the document's) + document
ISS = 'https://issuer.example/realms/main'
docs = [
    {'issuer': ISS, 'token_endpoint': ISS + '/protocol/openid-connect/token',
     'revocation_endpoint': ISS + '/protocol/openid-connect/revoke',
     'token_endpoint_auth_methods_supported': ['private_key_jwt', 'client_secret_basic',
                                               'client_secret_post', 'tls_client_auth',
                                               'client_secret_jwt'],
     'grant_types_supported': ['authorization_code', 'refresh_token']},
    {'issuer': ISS, 'token_endpoint': 'https://oauth2.example.com/token',
     'token_endpoint_auth_methods_supported': ['client_secret_post']},
    {'issuer': ISS, 'token_endpoint': 'https://[::1]:8443/token', 'revocation_endpoint': None},
    {'issuer': ISS, 'token_endpoint': 'http://127.0.0.1:8080/token',
     'token_endpoint_auth_methods_supported': ['none']},
    {'issuer': ISS, 'token_endpoint': 42},
    {'issuer': 'https://other.example', 'token_endpoint': 'https://other.example/token'},
]
for d in docs:
    for flags in (0, 1, 2, 3):
        put('discovery', bytes([flags]) + json.dumps(d).encode())
for iss in ['https://accounts.example.com', 'https://login.example.com/tenant/v2.0/',
            'http://127.0.0.1:9000/realms/x', 'https://user@host', 'https://h:99999',
            'https://h/?q', 'https:///']:
    put('discovery', b'\x01' + iss.encode())

# ---- key_file: the key file's text (also read as a ciphertext)
KEY = '000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f'
for k in [KEY + '\n', KEY + '\r\n', KEY, KEY.upper() + '\n', KEY[:-1] + 'g\n', KEY + '\n\n',
          KEY[:32] + '\n', ' ' + KEY, KEY + '0\n']:
    put('key_file', k)
put('key_file', b'\x01' + b'\x12\x34\x56\x78' + bytes(12) + b'ciphertext' + bytes(16))
put('key_file', b'\x02' + bytes(40))

# ---- http_header: header lines as libcurl delivers them
for h in [
    'HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 120\r\n\r\n',
    'HTTP/2 503\r\nretry-after: Wed, 21 Oct 2015 07:28:00 GMT\r\n\r\n',
    'HTTP/1.1 503 Service Unavailable\r\nRetry-After: Wednesday, 21-Oct-15 07:29:00 GMT\r\n\r\n',
    'HTTP/1.1 503\r\nRetry-After: Sun Nov  6 08:49:37 1994\r\n\r\n',
    'HTTP/1.1 100 Continue\r\nRetry-After: 9\r\n\r\nHTTP/1.1 500 Internal Server Error\r\n\r\n',
    'HTTP/1.1 429\r\nRetry-After: 99999999999999999999999999\r\n\r\n',
    'HTTP/1.1 429\r\nRetry-After:  \t 5 \t\r\n\r\n',
    'HTTP/1.1 429\r\nRetry-After: Mon, 29 Feb 2016 00:00:10 GMT\r\n\r\n',
    'HTTP/1.1 429\r\nRetry-After: Fri, 31 Dec 9999 23:59:59 GMT\r\n\r\n',
    'HTTP/1.1 429\r\nRetry-After: -1\r\n\r\n',
]:
    put('http_header', h)

print('seeds written to', os.path.normpath(ROOT), file=sys.stderr)
