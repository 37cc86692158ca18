-- Consentry's database, schemas, roles and grants, on a fresh cluster.
--
-- Run as the superuser, connected to database `postgres`, with one psql variable per password:
--   psql -X -v ON_ERROR_STOP=1 -d postgres -U postgres \
--     -v owner_password=... -v ledger_password=... -v processors_password=... \
--     -v query_password=... -v shredder_password=... -f infra/postgres/roles.sql
-- (infra/postgres/start.sh feeds the variables on stdin rather than on the command line.)
--
-- Tables are created by consentry_owner (migrations); what the other roles may do with them comes
-- from the ALTER DEFAULT PRIVILEGES below, so it holds for every table the owner creates later.
-- The application roles have no CREATE anywhere: run them with eventsourcing's CREATE_TABLE=false.
--
--                      ledger          keystore        views
--   consentry_owner    owner           owner           owner
--   consentry_ledger   DML             DML             -
--   consentry_processors SELECT        - (no USAGE)    DML
--   consentry_query    DML             SELECT          SELECT
--   consentry_shredder DML             DML             SELECT
--
-- DML = SELECT, INSERT, UPDATE, DELETE, TRUNCATE on tables and USAGE, SELECT, UPDATE on sequences.
-- UPDATE/DELETE/TRUNCATE are needed even by append-only writers: eventsourcing's recorder takes
-- `LOCK TABLE ... IN EXCLUSIVE MODE`, which PostgreSQL allows only with one of them.

\set ON_ERROR_STOP on

CREATE ROLE consentry_owner LOGIN PASSWORD :'owner_password';
CREATE ROLE consentry_ledger LOGIN PASSWORD :'ledger_password';
CREATE ROLE consentry_processors LOGIN PASSWORD :'processors_password';
CREATE ROLE consentry_query LOGIN PASSWORD :'query_password';
CREATE ROLE consentry_shredder LOGIN PASSWORD :'shredder_password';

CREATE DATABASE consentry ENCODING 'UTF8' TEMPLATE template0;

-- Nobody reaches a database unless granted. (PUBLIC's default is CONNECT and TEMPORARY.)
REVOKE ALL ON DATABASE consentry FROM PUBLIC;
REVOKE ALL ON DATABASE postgres FROM PUBLIC;
GRANT CONNECT ON DATABASE consentry
  TO consentry_owner, consentry_ledger, consentry_processors, consentry_query, consentry_shredder;
-- The owner runs migrations, and the contract tests give each test a scratch schema of its own.
GRANT CREATE ON DATABASE consentry TO consentry_owner;
-- The owner vacuums the keystore after a shred batch and forces a checkpoint so no page image of a
-- destroyed key lingers in the heap files (docs/keystore-postgres.md).
GRANT pg_checkpoint TO consentry_owner;

\connect consentry

-- Nothing lives in public, and nobody may put anything there.
REVOKE ALL ON SCHEMA public FROM PUBLIC;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

CREATE SCHEMA ledger AUTHORIZATION consentry_owner;   -- the event store
CREATE SCHEMA keystore AUTHORIZATION consentry_owner; -- per-subject keys; shredding deletes them
CREATE SCHEMA views AUTHORIZATION consentry_owner;    -- keyless read models, tracking

-- Schema USAGE. consentry_processors gets none on keystore: it cannot even see what is in it.
GRANT USAGE ON SCHEMA ledger TO consentry_ledger, consentry_processors, consentry_query, consentry_shredder;
GRANT USAGE ON SCHEMA keystore TO consentry_ledger, consentry_query, consentry_shredder;
GRANT USAGE ON SCHEMA views TO consentry_processors, consentry_query, consentry_shredder;

-- Tables and sequences consentry_owner creates from now on.
-- ledger
ALTER DEFAULT PRIVILEGES FOR ROLE consentry_owner IN SCHEMA ledger
  GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON TABLES TO consentry_ledger, consentry_query, consentry_shredder;
ALTER DEFAULT PRIVILEGES FOR ROLE consentry_owner IN SCHEMA ledger
  GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO consentry_ledger, consentry_query, consentry_shredder;
ALTER DEFAULT PRIVILEGES FOR ROLE consentry_owner IN SCHEMA ledger
  GRANT SELECT ON TABLES TO consentry_processors;
-- keystore
ALTER DEFAULT PRIVILEGES FOR ROLE consentry_owner IN SCHEMA keystore
  GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON TABLES TO consentry_ledger, consentry_shredder;
ALTER DEFAULT PRIVILEGES FOR ROLE consentry_owner IN SCHEMA keystore
  GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO consentry_ledger, consentry_shredder;
ALTER DEFAULT PRIVILEGES FOR ROLE consentry_owner IN SCHEMA keystore
  GRANT SELECT ON TABLES TO consentry_query;
-- views
ALTER DEFAULT PRIVILEGES FOR ROLE consentry_owner IN SCHEMA views
  GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON TABLES TO consentry_processors;
ALTER DEFAULT PRIVILEGES FOR ROLE consentry_owner IN SCHEMA views
  GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO consentry_processors;
ALTER DEFAULT PRIVILEGES FOR ROLE consentry_owner IN SCHEMA views
  GRANT SELECT ON TABLES TO consentry_query, consentry_shredder;

-- Composite types and functions eventsourcing creates (stored_event_uuid, insert_events) keep
-- PostgreSQL's defaults: USAGE / EXECUTE for PUBLIC, still gated by the schema USAGE above.
