-- pg_cron maintenance. Debian's pg_cron 1.4 schedules by the minute.
-- Scheduled as the migrating superuser; each job calls one function.
-- Expired job leases need no cron job: every claim reclaims them.

SELECT cron.schedule('flowtrack-partitions', '17 3 * * *',
    $$SELECT count(*) FROM flowtrack.run_maintenance()$$);
SELECT cron.schedule('flowtrack-prune-idempotency', '37 3 * * *',
    $$DELETE FROM internal.usage_idempotency WHERE created_at < now() - interval '45 days'$$);
