-- roles.sql as main had it at 493890c (before migrate could run as Cloud SQL's non-superuser
-- admin). Kept only so tests can build a database the way that main migrated it and prove
-- that today's migrate upgrades it. Never run by the code.
-- Database roles for observing-pipelines. Run by `observing-pipelines migrate` (as the admin,
-- after Alembic and Dagster's own migrations) every time: every statement is idempotent.
--
-- jobs_runtime  the webserver, daemon and runs connect as it. It owns the `dagster` schema and
--               ours (`pipelines`) with everything in them, and holds on the app's `ingester`
--               tables only what the jobs need. It cannot read `appview`.
-- The app's roles get no write access to our schemas; appview_runtime may read the results the
-- app shows (taxon images and conservation status).

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'jobs_runtime') THEN
        CREATE ROLE jobs_runtime LOGIN;  -- its password: `migrate` sets JOBS_RUNTIME_PASSWORD
    END IF;
END $$;

-- On Cloud SQL the admin is no superuser: it may hand objects to jobs_runtime, and keep
-- migrating them afterwards, only as a member of the role.
GRANT jobs_runtime TO CURRENT_USER;

ALTER SCHEMA dagster OWNER TO jobs_runtime;
ALTER SCHEMA pipelines OWNER TO jobs_runtime;
REVOKE ALL ON SCHEMA dagster, pipelines FROM PUBLIC;

-- Tables the admin created (Dagster's migration, ours) change hands; their sequences and
-- indexes follow.
DO $$
DECLARE
    relation record;
BEGIN
    FOR relation IN
        SELECT format('%I.%I', n.nspname, c.relname) AS name
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('dagster', 'pipelines') AND c.relkind IN ('r', 'p')
          AND pg_get_userbyid(c.relowner) <> 'jobs_runtime'
    LOOP
        EXECUTE format('ALTER TABLE %s OWNER TO jobs_runtime', relation.name);
    END LOOP;
END $$;

-- Only the view's owner may refresh it (ingester_runtime, in the app). Rather than make the
-- jobs a member of that role (and so writers of every ingester table), this one function runs
-- the refresh with the owner's rights.
CREATE OR REPLACE FUNCTION pipelines.refresh_community_ids() RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    REFRESH MATERIALIZED VIEW CONCURRENTLY ingester.community_ids;
END $$;
REVOKE ALL ON FUNCTION pipelines.refresh_community_ids() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pipelines.refresh_community_ids() TO jobs_runtime;

-- The app's tables (present wherever the app runs; skipped on a database without them):
-- read identifications and occurrences, stamp keys, maintain the taxa cache.
DO $$
DECLARE
    view_owner name;
BEGIN
    IF to_regclass('ingester.community_ids') IS NULL THEN
        RAISE NOTICE 'no ingester tables here: skipping the grants on them';
        RETURN;
    END IF;
    GRANT USAGE ON SCHEMA ingester TO jobs_runtime;
    GRANT SELECT ON ingester.identifications, ingester.occurrences, ingester.taxa,
        ingester.community_ids TO jobs_runtime;
    GRANT UPDATE (accepted_taxon_key, indexed_at) ON ingester.identifications TO jobs_runtime;
    GRANT INSERT, UPDATE ON ingester.taxa TO jobs_runtime;
    SELECT matviewowner INTO view_owner FROM pg_matviews
    WHERE schemaname = 'ingester' AND matviewname = 'community_ids';
    EXECUTE format('GRANT %I TO CURRENT_USER', view_owner);  -- as above, for a non-superuser
    EXECUTE format('ALTER FUNCTION pipelines.refresh_community_ids() OWNER TO %I', view_owner);
END $$;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'appview_runtime') THEN
        GRANT USAGE ON SCHEMA pipelines TO appview_runtime;
        GRANT SELECT ON pipelines.taxon_images, pipelines.taxon_conservation TO appview_runtime;
    END IF;
END $$;
