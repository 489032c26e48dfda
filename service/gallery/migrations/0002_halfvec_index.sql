-- The per-variant HNSW indexes hold half-precision copies of the embeddings (halfvec_cosine_ops): smaller and
-- faster to walk, while searches re-rank the index's candidates by their exact float32 cosine. A gallery made
-- before this rebuilds each full-precision index once, with its own m / ef_construction (minutes for a
-- million templates; replicas wait on the migration lock meanwhile). Indexes already in halfvec stay as they are.
DO $$
DECLARE
    variant record;
    options text;
BEGIN
    FOR variant IN
        SELECT v.id, v.dim, c.reloptions FROM variants v
        JOIN pg_class c ON c.relname = 'templates_hnsw_' || v.id
        WHERE pg_get_indexdef(c.oid) LIKE '%vector_cosine_ops%'
    LOOP
        options := COALESCE(array_to_string(variant.reloptions, ', '), 'm = 32, ef_construction = 128');
        EXECUTE format('DROP INDEX templates_hnsw_%s', variant.id);
        EXECUTE format(
            'CREATE INDEX templates_hnsw_%s ON templates USING hnsw ((embedding::halfvec(%s)) halfvec_cosine_ops)'
            ' WITH (%s) WHERE variant_id = %s',
            variant.id, variant.dim, options, variant.id
        );
    END LOOP;
END
$$;
