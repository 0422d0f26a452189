-- Monthly range partitions for time-partitioned tables: the months needed
-- now, plus a DEFAULT partition so an insert never fails for lack of one.
SET LOCAL ROLE flowtrack_owner;

CREATE FUNCTION internal.ensure_monthly_partitions(parent regclass, months_back integer DEFAULT 1, months_ahead integer DEFAULT 3)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    base   text := (SELECT relname FROM pg_class WHERE oid = parent);
    month  date;
    name   text;
    made   integer := 0;
BEGIN
    FOR i IN -months_back .. months_ahead LOOP
        month := (date_trunc('month', now()) + make_interval(months => i))::date;
        name := format('%s_%s', base, to_char(month, 'YYYY_MM'));
        IF to_regclass(format('partitions.%I', name)) IS NULL THEN
            EXECUTE format('CREATE TABLE partitions.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                           name, parent, month, (month + interval '1 month')::date);
            made := made + 1;
        END IF;
    END LOOP;
    name := base || '_default';
    IF to_regclass(format('partitions.%I', name)) IS NULL THEN
        EXECUTE format('CREATE TABLE partitions.%I PARTITION OF %s DEFAULT', name, parent);
        made := made + 1;
    END IF;
    RETURN made;
END
$$;
COMMENT ON FUNCTION internal.ensure_monthly_partitions(regclass, integer, integer) IS
  'Creates missing monthly partitions of parent (in schema partitions) from months_back to months_ahead, plus a default partition. Returns how many it made.';

SELECT internal.ensure_monthly_partitions('api.usage_events'::regclass);
