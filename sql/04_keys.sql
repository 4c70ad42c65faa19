-- Proves: without a usable key (unset, unreadable, readable by others, malformed) every
-- operation that needs it fails with UT008 and writes nothing; a ciphertext moved to another
-- row or column, altered, or written under another key fails with UT009 and returns nothing.
\set VERBOSITY terse

\i sql/try.psql

-- Writes a key file of the given content and mode as the server's OS user (who must be able
-- to read it), inside this cluster's data directory so parallel clusters never share it.
CREATE FUNCTION pg_temp.write_key_file(file text, content text, mode text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    path text := current_setting('data_directory') || '/' || file;
BEGIN
    EXECUTE format('COPY (SELECT %L) TO PROGRAM %L', content,
                   format('cat > %s && chmod %s %s', path, mode, path));
END
$$;

-- Points this session at a key file of the data directory.
CREATE FUNCTION pg_temp.use_key_file(file text) RETURNS boolean LANGUAGE sql AS $$
    SELECT set_config('upstream_token.key_file', current_setting('data_directory') || '/' || file, false)
           = current_setting('data_directory') || '/' || file
$$;

SELECT upstream_token.register_provider('keyed', 'https://keyed.example/token', 'k-client', 'k-secret');
SELECT upstream_token.store_upstream_token('k-1', 'keyed', 'k1-access', 'k1-refresh', 3600);
SELECT upstream_token.store_upstream_token('k-2', 'keyed', 'k2-access', 'k2-refresh', 3600);

-- The server's own key_file comes from postgresql.conf and is a superuser-only setting.
SELECT current_setting('upstream_token.key_file') <> '' AS key_configured;
SELECT setting <> '' AS set, context FROM pg_settings WHERE name = 'upstream_token.key_file';

-- 1. UT008: no key file set. Store, get and register_provider (with a secret) all fail.
SET upstream_token.key_file = '';
SELECT pg_temp.try($$SELECT upstream_token.store_upstream_token('k-3', 'keyed', 'a', 'r', 3600)$$);
SELECT pg_temp.try($$SELECT upstream_token.store_upstream_token('k-1', 'keyed', 'a', 'r', 3600)$$);
SELECT pg_temp.try($$SELECT upstream_token.get_upstream_token('k-1', 'keyed')$$);
SELECT pg_temp.try($$SELECT upstream_token.register_provider('keyed', 'https://other.example/token', 'k-client', 'new-secret')$$);
SELECT pg_temp.try($$SELECT upstream_token.register_provider('keyed2', 'https://other.example/token', 'k-client', 'new-secret')$$);
RESET upstream_token.key_file;
-- Nothing was written by the failed calls.
SELECT session, generation FROM upstream_token.token_status ORDER BY session;
SELECT name, token_endpoint FROM upstream_token.provider ORDER BY name;

-- 2. UT008: a key file others can read (0644) is refused, even though its key is valid.
SELECT pg_temp.write_key_file('ut_key_0644', repeat('0123456789abcdef', 4), '644');
SELECT pg_temp.use_key_file('ut_key_0644') AS switched;
SELECT pg_temp.try($$SELECT upstream_token.get_upstream_token('k-1', 'keyed')$$);
SELECT pg_temp.try($$SELECT upstream_token.store_upstream_token('k-3', 'keyed', 'a', 'r', 3600)$$);
-- Group-readable (0640) is refused as well.
SELECT pg_temp.write_key_file('ut_key_0640', repeat('0123456789abcdef', 4), '640');
SELECT pg_temp.use_key_file('ut_key_0640') AS switched;
SELECT pg_temp.try($$SELECT upstream_token.get_upstream_token('k-1', 'keyed')$$);

-- 3. UT008: a missing file, and files that do not hold exactly one 256-bit hex key.
SELECT pg_temp.use_key_file('ut_key_missing') AS switched;
SELECT pg_temp.try($$SELECT upstream_token.get_upstream_token('k-1', 'keyed')$$);
SELECT pg_temp.write_key_file('ut_key_short', repeat('ab', 16), '600');
SELECT pg_temp.use_key_file('ut_key_short') AS switched;
SELECT pg_temp.try($$SELECT upstream_token.get_upstream_token('k-1', 'keyed')$$);
SELECT pg_temp.write_key_file('ut_key_nothex', repeat('zz', 32), '600');
SELECT pg_temp.use_key_file('ut_key_nothex') AS switched;
SELECT pg_temp.try($$SELECT upstream_token.get_upstream_token('k-1', 'keyed')$$);

-- 4. UT009: a valid key, but not the one the rows were written with.
SELECT pg_temp.write_key_file('ut_key_other', repeat('0123456789abcdef', 4), '600');
SELECT pg_temp.use_key_file('ut_key_other') AS switched;
SELECT pg_temp.try($$SELECT upstream_token.get_upstream_token('k-1', 'keyed')$$);
-- What that key writes, the server's key cannot read back.
SELECT upstream_token.store_upstream_token('k-other', 'keyed', 'ko-access', 'ko-refresh', 3600);
RESET upstream_token.key_file;
SELECT pg_temp.try($$SELECT upstream_token.get_upstream_token('k-other', 'keyed')$$);
SELECT upstream_token.delete_upstream_token('k-other') AS deleted;
-- Back on the server's key, everything reads again.
SELECT upstream_token.get_upstream_token('k-1', 'keyed') = 'k1-access' AS readable;

-- Remove the key files again (as the server's OS user, who owns them).
DO $$
BEGIN
    EXECUTE format('COPY (SELECT 1) TO PROGRAM %L',
                   -- reads its input first: a program that exits before COPY writes breaks the pipe
                   format('cat > /dev/null && cd %s && rm -f ut_key_0644 ut_key_0640 ut_key_short ut_key_nothex ut_key_other',
                          current_setting('data_directory')));
END
$$;
SELECT count(*) AS key_files_left FROM pg_ls_dir('.') AS f WHERE f LIKE 'ut\_key\_%';

-- 5. UT009: ciphertexts are bound to their row and column. Each tampering happens in a
-- transaction that is rolled back, and get returns nothing.
BEGIN;
UPDATE upstream_token.token SET access_token = (SELECT access_token FROM upstream_token.token WHERE session = 'k-2')
 WHERE session = 'k-1';
SELECT pg_temp.try($$SELECT upstream_token.get_upstream_token('k-1', 'keyed')$$);
ROLLBACK;
BEGIN;
UPDATE upstream_token.token SET access_token = refresh_token WHERE session = 'k-1';
SELECT pg_temp.try($$SELECT upstream_token.get_upstream_token('k-1', 'keyed')$$);
ROLLBACK;
BEGIN;
-- One flipped bit in the ciphertext body.
UPDATE upstream_token.token
   SET access_token = set_byte(access_token, octet_length(access_token) - 20,
                               get_byte(access_token, octet_length(access_token) - 20) # 1)
 WHERE session = 'k-1';
SELECT pg_temp.try($$SELECT upstream_token.get_upstream_token('k-1', 'keyed')$$);
ROLLBACK;
BEGIN;
-- A truncated ciphertext.
UPDATE upstream_token.token SET access_token = substring(access_token FROM 1 FOR 10) WHERE session = 'k-1';
SELECT pg_temp.try($$SELECT upstream_token.get_upstream_token('k-1', 'keyed')$$);
ROLLBACK;
BEGIN;
-- A row renamed to another session keeps ciphertexts bound to the old one.
UPDATE upstream_token.token SET session = 'k-renamed' WHERE session = 'k-1';
SELECT pg_temp.try($$SELECT upstream_token.get_upstream_token('k-renamed', 'keyed')$$);
ROLLBACK;
-- The untouched rows still read.
SELECT upstream_token.get_upstream_token('k-1', 'keyed') = 'k1-access' AS k1,
       upstream_token.get_upstream_token('k-2', 'keyed') = 'k2-access' AS k2;

-- Leave nothing behind for later files.
SELECT upstream_token.drop_provider('keyed', cascade => true);
