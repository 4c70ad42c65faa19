-- upstream_token 0.1.0 -> 0.2.0. Each block below names the change it carries; together they
-- turn a 0.1.0 install into exactly what upstream_token--0.2.0.sql creates (a test compares).

\echo Use "ALTER EXTENSION upstream_token UPDATE TO '0.2.0'" to load this file. \quit
