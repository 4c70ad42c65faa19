-- upstream_token 0.1.0 -> 0.2.0. Each block below names the change it carries; together they
-- turn a 0.1.0 install into exactly what upstream_token--0.2.0.sql creates (a test compares).

\echo Use "ALTER EXTENSION upstream_token UPDATE TO '0.2.0'" to load this file. \quit

-- Security (issue 9, defect 1): rotate_key runs on its caller's search_path (a procedure that
-- commits can have no SET clause), so its operators are written with their schema.
CREATE OR REPLACE PROCEDURE upstream_token.rotate_key(batch_size integer DEFAULT 500)
LANGUAGE plpgsql
AS $fn$
DECLARE
    left_now  bigint;
    left_before bigint := NULL;
    idle integer := 0;
BEGIN
    LOOP
        left_now := upstream_token.reencrypt_batch(batch_size);
        EXIT WHEN left_now OPERATOR(pg_catalog.=) 0::bigint;
        COMMIT;
        IF left_before IS NOT NULL AND left_now OPERATOR(pg_catalog.>=) left_before THEN
            -- Only rows being refreshed or locked are left: give them a moment.
            idle := idle OPERATOR(pg_catalog.+) 1;
            IF idle OPERATOR(pg_catalog.>) 600 THEN
                RAISE EXCEPTION '% values could not be re-encrypted within 30 s', left_now
                    USING ERRCODE = '55P03',
                          HINT = 'Rows stay locked by long transactions; run rotate_key again later.';
            END IF;
            PERFORM pg_catalog.pg_sleep(0.05::double precision);
        ELSE
            idle := 0;
        END IF;
        left_before := left_now;
    END LOOP;
    RAISE NOTICE 'every stored secret is now sealed under key %', upstream_token.current_key_id();
END
$fn$;
