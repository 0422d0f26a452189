-- Benchmark fixtures for ./dev bench graph: generated layered graphs in
-- plain tables, the engine's path (graph JSON -> validate_graph +
-- topological_order) and a plain-SQL recursive-CTE implementation of the
-- same checks.
CREATE SCHEMA IF NOT EXISTS bench;
DROP TABLE IF EXISTS bench.nodes, bench.edges;
CREATE TABLE bench.nodes (g integer, key text, type text, config jsonb, PRIMARY KEY (g, key));
CREATE TABLE bench.edges (g integer, key text, source text, target text, condition jsonb, PRIMARY KEY (g, key));
CREATE INDEX ON bench.edges (g, source);
CREATE INDEX ON bench.edges (g, target);

-- A trigger, then layers of 10 nodes; each node feeds two of the next layer
-- (fan-out and fan-in everywhere), every fifth edge carries a condition.
CREATE FUNCTION bench.generate(n integer) RETURNS void LANGUAGE sql AS $$
    INSERT INTO bench.nodes VALUES (n, 'n0', 'TRIGGER_MANUAL', '{}');
    INSERT INTO bench.nodes
    SELECT n, 'n' || i, (ARRAY['LOGIC_CONDITION', 'ACTION_UPDATE_LEAD', 'LOGIC_DELAY'])[1 + i % 3],
           (ARRAY['{}', '{"status":"WON"}', '{"days":1}'])[1 + i % 3]::jsonb
      FROM generate_series(1, n - 1) i;
    INSERT INTO bench.edges SELECT n, 't' || i, 'n0', 'n' || i, NULL FROM generate_series(1, least(10, n - 1)) i;
    INSERT INTO bench.edges
    SELECT n, 'e' || i || '_' || k, 'n' || i, 'n' || t,
           CASE WHEN (i + k) % 5 = 0 THEN '{"op":"gt","path":"lead.fields.budget","value":1000}'::jsonb END
      FROM generate_series(1, n - 1) i,
           LATERAL (VALUES (1, ((i - 1) / 10 + 1) * 10 + 1 + i % 10),
                           (2, ((i - 1) / 10 + 1) * 10 + 1 + (i * 7 + 3) % 10)) AS x (k, t)
     WHERE t < n AND (k = 1 OR i % 10 <> (i * 7 + 3) % 10);
$$;

CREATE FUNCTION bench.graph_json(n integer) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'nodes', (SELECT jsonb_agg(jsonb_build_object('id', key, 'type', type, 'data', jsonb_build_object('config', config)))
                    FROM bench.nodes WHERE g = n),
        'edges', (SELECT jsonb_agg(jsonb_build_object('id', key, 'source', source, 'target', target, 'condition', condition))
                    FROM bench.edges WHERE g = n))::text
$$;

-- The engine: validation + topological order. Returns problems + ordered nodes.
CREATE FUNCTION bench.rust(n integer) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    g text := bench.graph_json(n);
BEGIN
    RETURN (SELECT count(*) FROM flowtrack.validate_graph(g)) * 1000000
         + (SELECT count(*) FROM flowtrack.topological_order(g));
END
$$;

-- The same checks in plain SQL with recursive CTEs: dangling edges, unknown
-- types, required config keys, malformed conditions, missing trigger,
-- unreachable nodes, cycles (a node reaching itself) and a topological
-- order (longest-path depth from the triggers).
CREATE FUNCTION bench.plain_sql(n integer) RETURNS bigint LANGUAGE sql AS $$
    WITH RECURSIVE
    nodes AS (SELECT key, type, config FROM bench.nodes WHERE g = n),
    edges AS (SELECT key, source, target, condition FROM bench.edges WHERE g = n),
    problems AS (
        SELECT 'dangling_edge' FROM edges e
         WHERE NOT EXISTS (SELECT 1 FROM nodes x WHERE x.key = e.source)
            OR NOT EXISTS (SELECT 1 FROM nodes x WHERE x.key = e.target)
        UNION ALL
        SELECT 'unknown_node_type' FROM nodes x WHERE NOT EXISTS (SELECT 1 FROM api.node_types t WHERE t.node_type = x.type)
        UNION ALL
        SELECT 'invalid_config' FROM nodes x JOIN api.node_types t ON t.node_type = x.type
         WHERE EXISTS (SELECT 1 FROM jsonb_array_elements_text(coalesce(t.config_schema -> 'required', '[]')) r
                        WHERE NOT x.config ? r)
        UNION ALL
        SELECT 'invalid_condition' FROM edges e
         WHERE e.condition IS NOT NULL AND NOT (e.condition ? 'and' OR e.condition ? 'or' OR e.condition ? 'not'
               OR (e.condition ->> 'op' IN ('eq','ne','gt','gte','lt','lte','in','contains','exists','not_exists')
                   AND e.condition ? 'path'))
        UNION ALL
        SELECT 'missing_trigger' WHERE NOT EXISTS (SELECT 1 FROM nodes WHERE type LIKE 'TRIGGER\_%')
    ),
    reach (key) AS (
        SELECT key FROM nodes WHERE type LIKE 'TRIGGER\_%'
        UNION
        SELECT e.target FROM reach r JOIN edges e ON e.source = r.key
    ),
    closure (src, dst) AS (
        SELECT source, target FROM edges
        UNION
        SELECT c.src, e.target FROM closure c JOIN edges e ON e.source = c.dst
    ),
    depth (key, d) AS (
        SELECT key, 0 FROM nodes WHERE type LIKE 'TRIGGER\_%'
        UNION
        SELECT e.target, r.d + 1 FROM depth r JOIN edges e ON e.source = r.key
    ),
    topo AS (SELECT key, max(d) AS d FROM depth GROUP BY key ORDER BY 2, 1)
    SELECT (SELECT count(*) FROM problems)
         + (SELECT count(*) FROM nodes x WHERE NOT EXISTS (SELECT 1 FROM reach r WHERE r.key = x.key))
         + (SELECT count(*) FROM closure WHERE src = dst)
         + (SELECT count(*) FROM topo)
$$;

-- Mean milliseconds per call over `reps` calls.
CREATE FUNCTION bench.time(fn text, n integer, reps integer) RETURNS numeric LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
BEGIN
    FOR i IN 1..reps LOOP
        EXECUTE format('SELECT bench.%I($1)', fn) USING n;
    END LOOP;
    RETURN round((extract(epoch FROM clock_timestamp() - t0) * 1000 / reps)::numeric, 2);
END
$$;
