-- Templates keyed by (user, variant name, model sha256), as in the SQLite gallery. The embedding column has no
-- fixed dimension so that variants of different sizes share one table; each variant gets its own partial HNSW
-- index on embedding::vector(dim) (created by the gallery when the variant is first enrolled).
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE variants (
    id           integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text        NOT NULL,
    model_sha256 text        NOT NULL,
    dim          integer     NOT NULL CHECK (dim BETWEEN 1 AND 2000),  -- pgvector's HNSW limit for vector
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (name, model_sha256)
);

CREATE TABLE templates (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    text        NOT NULL,
    variant_id integer     NOT NULL REFERENCES variants (id),
    model_ref  text        NOT NULL,
    embedding  vector      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX templates_by_user ON templates (user_id);
CREATE INDEX templates_by_variant ON templates (variant_id, user_id);
